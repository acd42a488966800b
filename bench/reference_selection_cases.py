#!/usr/bin/env python3
"""Writes golden cases of GEPA's Pareto parent selection, computed by the reference package.

For random candidate pools (per-example validation scores, candidates added in index order),
it builds the reference's per-example fronts exactly as gepa 0.1.4's GEPAState does (replace
on a higher score, join on a tie) and records the sampling weight of every candidate that
survives gepa.gepa_utils.remove_dominated_programs: how many fronts it is on. gepard's
`Fronts::undominated_weights` must give the same weights (crates/gepard-gepa/tests/
reference_selection.rs reads the file).

    /tmp/gepa-venv/bin/python bench/reference_selection_cases.py > crates/gepard-gepa/tests/fixtures/reference_selection.json
"""
import json
import random

from gepa.gepa_utils import remove_dominated_programs


def case(rng):
    n_candidates = rng.randint(1, 9)
    n_examples = rng.choice([3, 6, 10, 20])
    levels = rng.choice([[0.0, 1.0], [0.0, 0.5, 1.0], [0.0, 0.25, 0.5, 0.75, 1.0]])
    # Later candidates tend to be better, as in a real run, with copies and near-copies.
    pool = []
    for i in range(n_candidates):
        if pool and rng.random() < 0.25:
            base = list(rng.choice(pool))
            j = rng.randrange(n_examples)
            base[j] = rng.choice(levels)
            pool.append(base)
        else:
            p = min(0.9, 0.2 + 0.1 * i)
            pool.append([rng.choice(levels) if rng.random() < p else 0.0 for _ in range(n_examples)])
    best = {}
    fronts = {}
    for idx, scores in enumerate(pool):
        for k, s in enumerate(scores):
            if k not in best or s > best[k]:
                best[k] = s
                fronts[k] = {idx}
            elif s == best[k]:
                fronts[k].add(idx)
    means = [sum(s) / len(s) for s in pool]
    pruned = remove_dominated_programs(fronts, scores=means)
    weights = {}
    for front in pruned.values():
        for p in front:
            weights[p] = weights.get(p, 0) + 1
    return {"val_scores": pool, "weights": sorted([p, w] for p, w in weights.items())}


def main():
    rng = random.Random(20261126)
    print(json.dumps([case(rng) for _ in range(400)], separators=(",", ":")))


if __name__ == "__main__":
    main()
