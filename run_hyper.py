"""Search hyper-parameters: ``python run_hyper.py --model=VBPR --algo=exhaustive [--backend=ray]``.

See docs/hyper.md; the search space is ``properties/hyper/<Model>.hyper``.
"""

from recbole_mm.hyper import main

if __name__ == "__main__":
    main()
