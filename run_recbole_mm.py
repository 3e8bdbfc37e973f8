"""Train and evaluate a model: ``python run_recbole_mm.py --model=VBPR --dataset=ml-100k-mm``."""

from recbole_mm.cli import main

if __name__ == "__main__":
    main()
