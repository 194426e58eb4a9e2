"""Near-duplicate removal: this project's bulk MinHash vs datasketch's own ways, one run.

Builds a corpus of documents of a few hundred words (Zipf-distributed words)
with near-duplicates planted at known edit rates, then deduplicates it three
ways, each keeping the first document of a cluster and using datasketch's
MinHashLSH at the same threshold and permutations:

  ours    filters.minhash: vectorised shingle hashing and permutations, LSH
          candidates confirmed by their estimated Jaccard similarity;
  naive   one `MinHash.update` per shingle, then `lsh.query`/`lsh.insert`;
  bulk    datasketch's `MinHash.bulk`, then `lsh.query`/`lsh.insert`.

For each: documents per second (shingling included), precision (flagged pairs
whose exact Jaccard similarity reaches the threshold) and recall on planted
pairs with exact Jaccard >= 0.9. The last line printed is one JSON object.

    python bench/dedup.py                 # 50,000 documents
    python bench/dedup.py --docs 5000     # quicker
"""

from __future__ import annotations

import argparse
import json
import platform
import random
import sys
import time
import tracemalloc
from collections.abc import Callable

import numpy as np
from datasketch import MinHash, MinHashLSH

from filters.minhash import MinHasher, NearDuplicateIndex, normalize

NGRAM, NUM_PERM, THRESHOLD = 5, 128, 0.8
EDIT_RATES = (0.0, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.3)


def make_corpus(
    n_docs: int, dup_share: float, seed: int
) -> tuple[list[str], list[tuple[int, int, float]]]:
    """Documents, and the planted (copy, source, edit rate) triples."""
    rng = random.Random(seed)
    nprng = np.random.default_rng(seed)
    vocab = [f"{rng.choice('bcdfghklmnprstvw')}{rng.choice('aeiou')}{i:x}" for i in range(30_000)]
    ranks = np.arange(1, len(vocab) + 1)
    probs = (1 / ranks**1.05) / (1 / ranks**1.05).sum()
    docs: list[list[str]] = []
    planted: list[tuple[int, int, float]] = []
    for index in range(n_docs):
        if index > 100 and rng.random() < dup_share:
            source = rng.randrange(index)
            rate = rng.choice(EDIT_RATES)
            words = list(docs[source])
            for _ in range(round(rate * len(words))):
                position = rng.randrange(len(words))
                if rng.random() < 0.8:
                    words[position] = vocab[int(nprng.choice(len(vocab), p=probs))]
                else:
                    del words[position]
            docs.append(words)
            planted.append((index, source, rate))
        else:
            length = rng.randint(200, 400)
            docs.append([vocab[i] for i in nprng.choice(len(vocab), size=length, p=probs)])
    texts = []
    for words in docs:  # sentences, capitals and punctuation that normalisation must see through
        sentences, start = [], 0
        while start < len(words):
            end = start + rng.randint(8, 20)
            sentences.append(" ".join(words[start:end]).capitalize() + rng.choice(".!?;"))
            start = end
        texts.append(" ".join(sentences))
    return texts, planted


def shingles(text: str) -> set[str]:
    words = normalize(text).split()
    if len(words) < NGRAM:
        return {" ".join(words)}
    return {" ".join(words[i : i + NGRAM]) for i in range(len(words) - NGRAM + 1)}


def jaccard(a: set[str], b: set[str]) -> float:
    return len(a & b) / len(a | b) if a | b else 1.0


def run_ours(texts: list[str]) -> dict[int, int]:
    hasher, index = (
        MinHasher(num_perm=NUM_PERM, ngram=NGRAM),
        NearDuplicateIndex(THRESHOLD, NUM_PERM),
    )
    flagged = {}
    for start in range(0, len(texts), 1024):
        batch = texts[start : start + 1024]
        for offset, signature in enumerate(hasher.signatures(batch)):
            original = index.add(str(start + offset), signature)
            if original is not None:
                flagged[start + offset] = int(original)
    return flagged


def _lsh_loop(sketches: Callable[[], list[tuple[int, MinHash]]]) -> dict[int, int]:
    lsh, flagged = MinHashLSH(threshold=THRESHOLD, num_perm=NUM_PERM), {}
    for index, sketch in sketches():
        candidates = lsh.query(sketch)
        if candidates:
            flagged[index] = min(candidates)
        else:
            lsh.insert(index, sketch)
    return flagged


def run_naive(texts: list[str]) -> dict[int, int]:
    def sketches():
        for index, text in enumerate(texts):
            sketch = MinHash(num_perm=NUM_PERM)
            for shingle in shingles(text):
                sketch.update(shingle.encode("utf-8"))
            yield index, sketch

    return _lsh_loop(sketches)


def run_bulk(texts: list[str]) -> dict[int, int]:
    def sketches():
        for start in range(0, len(texts), 1000):
            sets = [[s.encode("utf-8") for s in shingles(t)] for t in texts[start : start + 1000]]
            for offset, sketch in enumerate(MinHash.bulk(sets, num_perm=NUM_PERM)):
                yield start + offset, sketch

    return _lsh_loop(sketches)


def score(
    flagged: dict[int, int], planted: list[tuple[int, int, float]], sets: ShingleSets
) -> dict[str, float]:
    true_pairs = [jaccard(sets[d], sets[o]) >= THRESHOLD for d, o in flagged.items()]
    source_of = {copy: source for copy, source, _ in planted}

    def root(i: int) -> int:
        while i in source_of:
            i = source_of[i]
        return i

    strong = [(c, s) for c, s, _ in planted if jaccard(sets[c], sets[s]) >= 0.9]
    found = sum(1 for c, _ in strong if c in flagged and root(flagged[c]) == root(c))
    return {
        "flagged": len(flagged),
        "precision": round(sum(true_pairs) / len(true_pairs), 4) if true_pairs else 1.0,
        "recall_j90": round(found / len(strong), 4) if strong else 1.0,
        "planted_j90": len(strong),
    }


class ShingleSets:
    """Exact shingle sets, made on demand and dropped after scoring: holding all of
    them while a method is timed would slow its garbage collection."""

    def __init__(self, texts: list[str]) -> None:
        self.texts, self.cache = texts, {}

    def __getitem__(self, index: int) -> set[str]:
        if index not in self.cache:
            self.cache[index] = shingles(self.texts[index])
        return self.cache[index]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--docs", type=int, default=50_000)
    parser.add_argument("--dup-share", type=float, default=0.1)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    texts, planted = make_corpus(args.docs, args.dup_share, args.seed)
    sets = ShingleSets(texts)
    words = sum(len(t.split()) for t in texts) / len(texts)
    report: dict[str, object] = {
        "bench": "dedup",
        "documents": len(texts),
        "mean_words": round(words, 1),
        "planted_pairs": len(planted),
        "threshold": THRESHOLD,
        "num_perm": NUM_PERM,
        "ngram": NGRAM,
        "machine": f"{platform.machine()}, {platform.python_version()}",
    }
    for name, method in (("ours", run_ours), ("bulk", run_bulk), ("naive", run_naive)):
        start = time.perf_counter()
        flagged = method(texts)
        seconds = time.perf_counter() - start
        report[name] = {
            "docs_per_s": round(len(texts) / seconds, 1),
            "seconds": round(seconds, 2),
            **score(flagged, planted, sets),
        }
        sets.cache.clear()
        print(f"{name:>6}: {report[name]}", file=sys.stderr)
    # Memory of our index, measured apart from the timed runs (tracing slows them).
    tracemalloc.start()
    run_ours(texts)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    report["ours"]["peak_bytes_per_doc"] = round(peak / len(texts))
    report["ours"]["projected_gib_per_million_docs"] = round(peak / len(texts) * 1e6 / 2**30, 2)
    ours, bulk, naive = report["ours"], report["bulk"], report["naive"]
    report["ours_vs_naive"] = round(ours["docs_per_s"] / naive["docs_per_s"], 2)
    report["ours_vs_bulk"] = round(ours["docs_per_s"] / bulk["docs_per_s"], 2)
    report["targets_met"] = (
        report["ours_vs_naive"] >= 20
        and report["ours_vs_bulk"] >= 3
        and ours["recall_j90"] >= 0.95
        and ours["precision"] >= 0.98
    )
    print(json.dumps(report))


if __name__ == "__main__":
    main()
