"""Heuristic scorer speed on 500-word documents, against a plain tokenising pass.

The baseline is the cheapest thing any scorer must do: split each document
into words once. Each scorer then runs alone over the same documents on one
core. Target: at least 2,000 documents of 500 words per second per scorer.
The chatter scorer looks closely only near trigger phrases, so it is also timed
on documents whose every paragraph holds innocent ones ("I hope this", "the
prompt", "I cannot"), its slow path. The diversity report, which watches every
kept document of a build, is timed too. Rates are documents per CPU-second of this
process, so a busy machine slows them less than wall-clock rates (though shared
caches still do): compare figures taken on an idle machine. The last line printed
is one JSON object.

    python bench/scorers.py --docs 4000
"""

from __future__ import annotations

import argparse
import json
import platform
import random
import sys
import time

from filters.diversity import Diversity
from filters.scorers import HEURISTIC_SCORERS, ChatterScorer

VOCABULARY = (  # noqa: SIM905 - a sentence reads best as text
    "the tide gauge logged every hour and engineers read it with care because the system had "
    "flagged a fault it could have hidden from the harbour board in its quarterly report while "
    "auditors asked whether the relay or the sensor had failed first and why nobody noticed"
).split()


def documents(n: int, words: int, seed: int) -> list[str]:
    rng = random.Random(seed)
    docs = []
    for _ in range(n):
        sentences, total = [], 0
        while total < words:
            length = rng.randint(8, 24)
            sentences.append(
                " ".join(rng.choice(VOCABULARY) for _ in range(length)).capitalize() + "."
            )
            total += length
        paragraphs = [" ".join(sentences[i : i + 5]) for i in range(0, len(sentences), 5)]
        docs.append("\n\n".join(paragraphs))
    return docs


# Ordinary sentences that trip the chatter scorer's triggers without being chatter.
TRIGGERS = (
    " I hope this relay holds, she said to nobody in particular; the prompt reply from the "
    "board was that the operators cannot wait for the required words of the audit."
)


def with_triggers(docs: list[str]) -> list[str]:
    return [doc.replace("\n\n", TRIGGERS + "\n\n") for doc in docs]


def diversity(docs: list[str]) -> None:
    report = Diversity()
    axes = {"ai_name": "Kestrel", "organization": "the Pelham Trust", "place": "Rosario, Argentina"}
    for doc in docs:
        report.add(doc, axes)
    report.report()


def rate(func, docs: list[str]) -> float:
    func(docs[:50])  # warm up (compiles regexes, builds tables)
    start = time.process_time()  # CPU seconds: other work on the machine does not count
    func(docs)
    return len(docs) / (time.process_time() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--docs", type=int, default=4000)
    parser.add_argument("--words", type=int, default=500)
    args = parser.parse_args()
    docs = documents(args.docs, args.words, seed=0)
    report: dict[str, object] = {
        "bench": "scorers",
        "documents": len(docs),
        "mean_words": round(sum(len(d.split()) for d in docs) / len(docs), 1),
        "machine": f"{platform.machine()}, {platform.python_version()}, one core, CPU time",
        "baseline_split_docs_per_s": round(rate(lambda ds: [d.split() for d in ds], docs)),
    }
    for name, cls in sorted(HEURISTIC_SCORERS.items()):
        report[f"{name}_docs_per_s"] = round(rate(cls().score, docs))
        print(f"{name:>12}: {report[f'{name}_docs_per_s']:,} docs/s", file=sys.stderr)
    report["chatter_with_triggers_docs_per_s"] = round(
        rate(ChatterScorer().score, with_triggers(docs))
    )
    report["diversity_docs_per_s"] = round(rate(diversity, docs))
    timed = [f"{n}_docs_per_s" for n in HEURISTIC_SCORERS] + ["chatter_with_triggers_docs_per_s"]
    report["slowest_docs_per_s"] = min(report[key] for key in timed)
    report["target_met"] = report["slowest_docs_per_s"] >= 2000
    print(json.dumps(report))


if __name__ == "__main__":
    main()
