"""dedup on STS train+dev: how many gold-5.0 pairs (same meaning) land in one group, per threshold.

A pair counts as found when both sentences end up in the same near-duplicate group (identical
sentences are one row). "false merges" counts pairs scored <= 2 (different meaning) that share a group.

    PYTHONPATH=src .venv/bin/python benchmarks/dedup_sts.py
"""

from __future__ import annotations

import numpy as np
from index_data import sts_pairs, sts_vectors, timed
from machine import cpu_line

from sentemb.retrieval.dedup import find_duplicates


def main() -> None:
    print(cpu_line())
    sentences, vectors = sts_vectors()
    row = {s: i for i, s in enumerate(sentences)}
    pairs = [(row[a], row[b], score) for a, b, score in sts_pairs() if a != b]
    gold = [(a, b) for a, b, score in pairs if score == 5.0]
    different = [(a, b) for a, b, score in pairs if score <= 2.0]
    print(f"{len(sentences):,} unique sentences; {len(gold):,} gold-5.0 pairs, {len(different):,} pairs scored <= 2")
    header = ("threshold", "method", "gold found", "false merges", "groups>1", "dupes", "s")
    print("{:>9} {:>6} {:>12} {:>13} {:>9} {:>7} {:>6}".format(*header))
    runs = [(t, "exact") for t in (0.8, 0.85, 0.9, 0.95)] + [(0.9, "index")]
    for threshold, method in runs:
        found, seconds = timed(find_duplicates, vectors, threshold, method=method)
        group = found.group
        hit = sum(group[a] == group[b] for a, b in gold)
        wrong = sum(group[a] == group[b] for a, b in different)
        multi = int((np.bincount(group) > 1).sum())
        print(
            f"{threshold:9.2f} {method:>6} {hit:5,} ({hit / len(gold):4.0%}) "
            f"{wrong:6,} ({wrong / len(different):4.1%}) {multi:9,} {int(found.is_duplicate.sum()):7,} "
            f"{seconds:6.1f}"
        )


if __name__ == "__main__":
    main()
