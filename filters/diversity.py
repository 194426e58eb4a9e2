"""Diversity of a build's output, measured on the documents themselves, not the prompts.

Synthetic corpora fail by sameness: one opening phrase, one name, one plot.
`Diversity` watches the documents that reach the shards and reports distinct-n
(unique word n-grams over all n-grams), the most frequent first sentences and
opening words with their shares, the most frequent proper names with the share
of documents using them, and the share of documents whose opening (first five
words) repeats another's. To bound memory on huge builds it measures the first
`sample` documents in build order (20,000 by default), and says so.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterator

from generator.records import Document

_SENTENCE_END = re.compile(r"(?<=[.!?])\s+")
_WORD = re.compile(r"[^\W\d_]+(?:['’-][^\W\d_]+)*")
_NAME = re.compile(r"\b[A-Z][^\W\d_]+(?:[ \t]+[A-Z][^\W\d_]+)*")
_COMMON = """
    The This That These Those There Then When What Where Which While With Without After Before
    During Each Every Some Many Most Our Their His Her Its They She Him We You Your And But For
    Not All Any One Two Three First Second Third Monday Tuesday Wednesday Thursday Friday
    Saturday Sunday January February March April May June July August September October
    November December Section Figure Table Appendix Finding Recommendation Summary
"""
COMMON_CAPITALISED = frozenset(_COMMON.split())


def _names(text: str) -> set[str]:
    """Runs of capitalised words, less leading sentence words such as "The" or "After"."""
    names = set()
    for match in _NAME.findall(text):
        words = match.split()
        while words and words[0] in COMMON_CAPITALISED:
            words.pop(0)
        if words and len(" ".join(words)) >= 3:
            names.add(" ".join(words))
    return names


class Diversity:
    def __init__(self, sample: int = 20_000, top: int = 10) -> None:
        self.sample, self.top = sample, top
        self.seen = 0
        self.ngrams: list[set[int]] = [set(), set(), set()]
        self.totals = [0, 0, 0]
        self.first_sentences: Counter[str] = Counter()
        self.opening_words: Counter[str] = Counter()
        self.openings: Counter[str] = Counter()
        self.names: Counter[str] = Counter()

    def run(self, docs: Iterator[Document]) -> Iterator[Document]:
        for doc in docs:
            if self.seen < self.sample:
                self.add(doc.text)
            yield doc

    def add(self, text: str) -> None:
        self.seen += 1
        words = [w.lower() for w in _WORD.findall(text)]
        for n in (1, 2, 3):
            grams = [hash(tuple(words[i : i + n])) for i in range(len(words) - n + 1)]
            self.ngrams[n - 1].update(grams)
            self.totals[n - 1] += len(grams)
        stripped = text.strip()
        first = _SENTENCE_END.split(stripped, maxsplit=1)[0][:200]
        self.first_sentences[" ".join(first.lower().split())] += 1
        self.opening_words[" ".join(words[:3])] += 1
        self.openings[" ".join(words[:5])] += 1
        self.names.update(_names(stripped))

    def report(self) -> dict[str, object]:
        n = max(self.seen, 1)

        def shares(counter: Counter[str]) -> list[dict[str, object]]:
            return [
                {"text": text, "count": count, "share": round(count / n, 4)}
                for text, count in counter.most_common(self.top)
            ]

        repeated = sum(c for c in self.openings.values() if c > 1)
        return {
            "documents_measured": self.seen,
            "distinct_1": round(len(self.ngrams[0]) / max(self.totals[0], 1), 4),
            "distinct_2": round(len(self.ngrams[1]) / max(self.totals[1], 1), 4),
            "distinct_3": round(len(self.ngrams[2]) / max(self.totals[2], 1), 4),
            "top_first_sentences": shares(self.first_sentences),
            "top_opening_words": shares(self.opening_words),
            "top_names": shares(self.names),
            "repeated_opening_share": round(repeated / n, 4),
        }
