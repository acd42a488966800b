#!/usr/bin/env python3
"""Compares gepard's and the reference's best scores over many seeds, with standard errors.

Single seeds differ by up to 0.7 in best score (different RNGs pick different parents and
minibatches), so a difference between two 10-seed means says little; this prints each
side's mean, standard deviation and the difference with its standard error, per pairing of
budgets, over the seeds both sides have.

    python3 bench/compare_runs.py GEPARD_DIR REFERENCE_DIR 300:300 365:300 600:600 665:600

GEPARD_DIR holds `gepard_seed{S}_budget{B}.json` (bench/gepa_suite.sh), REFERENCE_DIR holds
`ref_seed{S}_budget{B}.json` (shared/bench/run_reference.py). Each pairing is
`GEPARD_BUDGET:REFERENCE_BUDGET`. Standard library only. With the shared bench directory at
$BENCH (default /work/shared/bench) it also prints, per pairing, how many runs' best
instructions hold each set of the simulator's skills (read with simllm's own trigger table).
"""
import collections
import json
import math
import os
import re
import sys


def skills_reader():
    """simllm.skills_present, or None when the shared bench directory is not there."""
    sys.path.insert(0, os.environ.get("BENCH", "/work/shared/bench"))
    try:
        import simllm  # noqa: PLC0415 - optional, from the shared bench directory
    except ImportError:
        return None
    return lambda text: frozenset(simllm.SKILLS) - simllm.skills_present(text)


def load(directory, prefix):
    runs = {}
    for name in os.listdir(directory):
        m = re.fullmatch(prefix + r"_seed(\d+)_budget(\d+)\.json", name)
        if m:
            try:
                with open(os.path.join(directory, name)) as f:
                    runs[(int(m.group(2)), int(m.group(1)))] = json.load(f)
            except ValueError:
                print(f"skipping {name}: not complete JSON (still being written?)", file=sys.stderr)
    return runs


def stats(xs):
    n = len(xs)
    mean = sum(xs) / n
    sd = math.sqrt(sum((x - mean) ** 2 for x in xs) / (n - 1)) if n > 1 else 0.0
    return mean, sd, sd / math.sqrt(n)


def main():
    if len(sys.argv) < 4:
        sys.exit(__doc__)
    gepard, reference = load(sys.argv[1], "gepard"), load(sys.argv[2], "ref")
    missing_skills = skills_reader()
    skill_rows = []
    print("| gepard budget | reference budget | seeds | metric | gepard mean (sd) | reference mean (sd) "
          "| difference ± SE | difference / SE | gepard calls: mean (max) | reference calls: mean (max) |")
    print("|---:|---:|---:|---|---|---|---|---:|---|---|")
    for pairing in sys.argv[3:]:
        gb, rb = (int(x) for x in pairing.split(":"))
        seeds = sorted(s for (b, s) in gepard if b == gb and (rb, s) in reference)
        if len(seeds) < 2:
            print(f"| {gb} | {rb} | {len(seeds)} | (not enough seeds on both sides) |")
            continue
        g = [gepard[(gb, s)] for s in seeds]
        r = [reference[(rb, s)] for s in seeds]
        gcalls = [x["metric_calls"] for x in g]
        rcalls = [x["total_metric_calls"] for x in r]
        for metric, gkey, rkey in (("val", "best_val_score", "val_best_score"),
                                   ("test", "best_test_score", "test_best_score")):
            gm, gsd, gse = stats([x[gkey] for x in g])
            rm, rsd, rse = stats([x[rkey] for x in r])
            se = math.hypot(gse, rse)
            z = (gm - rm) / se if se else float("nan")
            print(f"| {gb} | {rb} | {seeds[0]}–{seeds[-1]} ({len(seeds)}) | {metric} | {gm:.3f} ({gsd:.3f}) "
                  f"| {rm:.3f} ({rsd:.3f}) | {gm - rm:+.3f} ± {se:.3f} | {z:+.1f} "
                  f"| {sum(gcalls) / len(gcalls):.0f} ({max(gcalls)}) | {sum(rcalls) / len(rcalls):.0f} ({max(rcalls)}) |")
        if missing_skills:
            for side, runs, key in (("gepard", g, "best_instructions"), ("reference", r, "best_prompt")):
                counts = collections.Counter(", ".join(sorted(missing_skills(x[key]))) or "none" for x in runs)
                listed = "; ".join(f"{k}: {n}" for k, n in counts.most_common())
                skill_rows.append(f"| {gb if side == 'gepard' else rb} | {side} | {len(runs)} | {listed} |")
    if skill_rows:
        print()
        print("| budget | engine | runs | skills missing from the best instructions: runs |")
        print("|---:|---|---:|---|")
        print("\n".join(skill_rows))


if __name__ == "__main__":
    main()
