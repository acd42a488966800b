#!/usr/bin/env python3
"""Ceilings of the simulated benchmark (shared/bench/simllm.py) by the skills an instruction holds.

The simulator answers a row correctly only if the instruction holds every skill the row needs,
and then still misses the "hard" rows (ROW_NOISE) and a little prompt-dependent noise. Each
reflection adds one skill sentence (or rewrites one away, or rewords without changing skills), so
a candidate reached through k accepted children holds at most k skills. For every skill set this
prints the share of validation and test rows an instruction with exactly those skills can get
right at best (rows it covers, minus the hard rows, ignoring prompt noise and length penalties,
which only lower it): a ceiling no instruction text can beat.

Usage: python3 bench/skill_bound.py [SHARED_BENCH_DIR]   (default /work/shared/bench)
"""

import itertools
import json
import os
import sys

BENCH = sys.argv[1] if len(sys.argv) > 1 else "/work/shared/bench"
sys.path.insert(0, BENCH)
import simllm  # noqa: E402

world = simllm.World.from_jsonl(os.path.join(BENCH, "..", "data", "sentiment_uci.jsonl"))


def load(name):
    with open(os.path.join(BENCH, "splits", name), encoding="utf-8") as f:
        return [world.rows[json.loads(line)["goal"].strip()] for line in f]


val, test = load("val.jsonl"), load("test.jsonl")


def ceiling(skills, rows):
    ok = [
        r
        for r in rows
        if r.skills <= skills and simllm.stable_frac("row-noise", r.goal) >= simllm.ROW_NOISE
    ]
    return len(ok) / len(rows)


print("| skills | skill set | ceiling val | ceiling test |")
print("|---:|---|---:|---:|")
for k in range(len(simllm.SKILLS) + 1):
    for combo in itertools.combinations(simllm.SKILLS, k):
        s = frozenset(combo)
        print(f"| {k} | {', '.join(combo) or '(none: the seed)'} | {ceiling(s, val):.3f} | {ceiling(s, test):.3f} |")
