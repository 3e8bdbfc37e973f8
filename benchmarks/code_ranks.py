"""Where a semantic-id generator loses to an ID model: the rank of the target's code, level by level.

For every held-out target and every code level ``l``, the rank of the target item's level-``l``
code among the codes the trie allows after the target's own first ``l`` codes (teacher
forcing), under two models that share one split:

* the generative model (CEMG): the generator's distribution over the level's code tokens given
  the prompt and the true prefix (``CodeGenerator.target_logits``);
* an ID model with ``full_sort_predict`` (SASRec, GRU4Rec, ...): its softmax over items, summed
  over the items under each code (the code distribution that model implies), using the
  generative model's item codes.

If the ID model ranks the target's codes better at every level, the codes can express what the
ID model knows and the generator falls short; if both rank a level equally badly, that level's
codes group items a user's history does not separate. Both models score the batches of the
generative checkpoint's split (same dataset, same item ids: checked)::

    python benchmarks/code_ranks.py <CEMG best checkpoint> <SASRec best checkpoint> --split=valid

Prints, per level, the share of targets whose code ranks first and within the top 5 and the
mean reciprocal rank, and writes them to ``--out`` (JSON).
"""

from __future__ import annotations

import argparse

import torch

from recbole_mm.experiments.results import pipe_table, write_output


def rank_of(log_probs: torch.Tensor, true: torch.Tensor) -> torch.Tensor:
    """1-based rank of ``true`` in each row of ``log_probs`` (ties count against it).

    Shapes:
        log_probs: ``[B, K]`` (``-inf`` for codes not allowed); true: ``[B]``; returns ``[B]``.
    """
    own = log_probs.gather(1, true[:, None])
    return (log_probs >= own).sum(1)  # the target itself and every code scored as high


def generator_code_log_probs(model, interaction, codes: torch.Tensor) -> list[torch.Tensor]:
    """Per level ``l``: ``[B, vocab_l]`` log-probabilities of the level's codes given the prompt
    and the true first ``l`` codes (``-inf`` where the trie allows no item)."""
    generator = model.generator
    prompt, mask = model._prompt(interaction)
    target = generator.tokens.tokens(codes)
    logits = generator.target_logits(prompt, mask, target).float().log_softmax(-1)  # [B, L, V]
    out = []
    for level, vocab in enumerate(generator.tokens.vocab_sizes):
        lo = int(generator.tokens.level_offsets[level])
        allowed = model.trie.allowed(codes[:, :level])
        out.append(logits[:, level, lo : lo + vocab].masked_fill(~allowed, float("-inf")))
    return out


def implied_code_log_probs(
    scores: torch.Tensor, item_codes: torch.Tensor, codes: torch.Tensor, vocab_sizes
) -> list[torch.Tensor]:
    """Per level ``l``: ``[B, vocab_l]`` log of the item softmax summed over the items whose
    first ``l`` codes are the target's and whose level-``l`` code is each column.

    Shapes:
        scores: ``[B, n_items]``; item_codes: ``[n_items, L]`` (-1 rows: no item);
        codes: ``[B, L]`` the targets' codes.
    """
    valid = (item_codes >= 0).all(1)  # [n_items]
    p = scores.double().masked_fill(~valid, float("-inf")).softmax(1)  # [B, n_items]
    out = []
    match = valid.expand_as(p).clone()
    for level, vocab in enumerate(vocab_sizes):
        column = item_codes[:, level].clamp(min=0).expand_as(p)
        mass = p.new_zeros(p.shape[0], vocab).scatter_add_(1, column, p * match)
        out.append(mass.log())  # -inf where no matching item
        match &= item_codes[:, level] == codes[:, level : level + 1]
    return out


def summarise(ranks: torch.Tensor) -> dict:
    """``ranks`` ``[N, L]`` -> per level hit@1, hit@5, MRR."""
    return {
        "hit@1": (ranks == 1).float().mean(0).tolist(),
        "hit@5": (ranks <= 5).float().mean(0).tolist(),
        "mrr": (1.0 / ranks.float()).mean(0).tolist(),
    }


@torch.no_grad()
def code_ranks(generative, id_model, data) -> tuple[torch.Tensor, torch.Tensor]:
    """``(generative ranks, ID-model ranks)``, each ``[N, L]`` over every target of ``data``."""
    generative.eval()
    id_model.eval()
    item_codes = generative.item_codes
    vocab = generative.generator.tokens.vocab_sizes
    gen_ranks, id_ranks = [], []
    for batch in data:
        interaction = batch[0].to(generative.device)
        target = interaction[generative.ITEM_ID]
        codes = item_codes[target]  # [B, L]
        per_level = generator_code_log_probs(generative, interaction, codes)
        gen_ranks.append(
            torch.stack([rank_of(lp, codes[:, i]) for i, lp in enumerate(per_level)], 1)
        )
        scores = id_model.full_sort_predict(interaction.to(id_model.device)).view(len(target), -1)
        per_level = implied_code_log_probs(scores.cpu(), item_codes.cpu(), codes.cpu(), vocab)
        id_ranks.append(
            torch.stack([rank_of(lp, codes[:, i].cpu()) for i, lp in enumerate(per_level)], 1)
        )
    return torch.cat(gen_ranks), torch.cat(id_ranks)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("generative", help="best checkpoint of the generative model (CEMG)")
    parser.add_argument("id_model", help="best checkpoint of the ID model (SASRec, ...)")
    parser.add_argument("--split", default="valid", choices=("valid", "test"))
    parser.add_argument("--out", default="benchmark_results/code_ranks.json")
    args = parser.parse_args(argv)

    from recbole_mm.quick_start import load_data_and_model

    _, generative, dataset, _, valid, test = load_data_and_model(args.generative)
    _, id_model, id_dataset, _, _, _ = load_data_and_model(args.id_model)
    field = generative.ITEM_ID
    if list(dataset.field2id_token[field]) != list(id_dataset.field2id_token[field]):
        raise SystemExit(
            f"{args.generative} and {args.id_model} number their items differently: run both "
            "on the same dataset with the same filtering"
        )
    gen, ids = code_ranks(generative, id_model, valid if args.split == "valid" else test)
    names = (type(generative).__name__, type(id_model).__name__)
    record = {
        "split": args.split,
        "targets": len(gen),
        names[0]: summarise(gen),
        names[1]: summarise(ids),
    }
    print(f"{len(gen)} {args.split} targets; rank of the target's code given its true prefix")
    a, b = record[names[0]], record[names[1]]
    header = ["level"] + [f"{n} {m}" for m in ("hit@1", "hit@5", "MRR") for n in names]
    table = [
        [level + 1] + [f"{r[m][level]:.3f}" for m in ("hit@1", "hit@5", "mrr") for r in (a, b)]
        for level in range(gen.shape[1])
    ]
    print(pipe_table(header, table))
    write_output(args.out, record)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
