"""Diversity of a build's output, measured on the documents themselves, not the prompts.

Synthetic corpora fail by sameness: one opening phrase, one name, one plot.
`Diversity` watches the documents that reach the shards and reports distinct-n
(unique word n-grams over all n-grams), the most frequent first sentences and
opening words with their shares, the most frequent proper names with the share
of documents using them, and the share of documents whose opening (first five
words) repeats another's.

Prompts draw an AI name, an organisation and a place per document (the row's
`axes`), but a model may ignore them and fall back on its own favourites, so
`seeds_in_text` counts, for each of these draws, which drawn value the most
texts mention (whoever drew it) and how many texts mention their own draw. A
value is looked for in every text from the first document that drew it on.

To bound memory on huge builds it measures the first `sample` documents in
build order (20,000 by default), and says so.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from itertools import pairwise
from typing import Any

from generator.records import Document

_SENTENCE_END = re.compile(r"(?<=[.!?])\s+")
_WORD = re.compile(r"[^\W\d_]+(?:['’-][^\W\d_]+)*")
_NAME = re.compile(r"\b[A-Z][^\W\d_]+(?:[ \t]+[A-Z][^\W\d_]+)*")
_TOKEN = re.compile(r"[^\W_]+")  # words and numbers, as seed values are matched
_COMMON = """
    The This That These Those There Then When What Where Which While With Without After Before
    During Each Every Some Many Most Our Their His Her Its They She Him We You Your And But For
    Not All Any One Two Three First Second Third Monday Tuesday Wednesday Thursday Friday
    Saturday Sunday January February March April May June July August September October
    November December Section Figure Table Appendix Finding Recommendation Summary However
    Should Would Could Unlike Although Because Since Once Now Today Yesterday Still Yet Even
    Only Perhaps Instead Meanwhile Later Finally Dear Yes Did Does Can Will Had Has Into Over
"""
COMMON_CAPITALISED = frozenset(_COMMON.split())
# Characters after which a capital letter starts a sentence (or a heading, quote or item).
_SENTENCE_STARTERS = frozenset(".!?:;\"“”‘'(*#>-–—•\n")
SEED_DRAWS = ("ai_name", "organization", "place")
_TRAILING_DETAIL = re.compile(r",| (?:in|on|near|at|off) ")  # "Puno on Lake Titicaca"


def _is_sentence_start(text: str, position: int) -> bool:
    before = text[:position].rstrip(" \t")
    return not before or before[-1] in _SENTENCE_STARTERS or before[-1].isdigit()


@dataclass
class _NameEvidence:
    """What one text says about which capitalised words are names."""

    names: set[str]  # runs that are names on this text's own evidence
    initial_only: set[str]  # words capitalised here only at the start of a sentence
    mid_sentence: set[str]  # words capitalised in the middle of a sentence


def _name_evidence(text: str, lower_case: set[str]) -> _NameEvidence:
    """Runs of capitalised words, less the words that are capitalised only because they
    start a sentence ("However", "Made", "Should", "Unlike").

    At the head of a longer run ("Ruth Okafor read...") a sentence-initial word stays
    unless it is a common sentence opener or the text writes it in lower case too (one of
    the `lower_case` words). A sentence-initial word alone ("Kestrel logged it.") is set
    aside for the whole sample to decide: it is a name if some text capitalises it
    mid-sentence."""
    runs = [(m.start(), m.group().split()) for m in _NAME.finditer(text)]
    starts = [_is_sentence_start(text, start) for start, _ in runs]
    mid_sentence = {
        word
        for (_, words), at_start in zip(runs, starts, strict=True)
        for i, word in enumerate(words)
        if i > 0 or not at_start
    }
    names, initial_only = set(), set()
    for (_, words), at_start in zip(runs, starts, strict=True):
        first = words[0]
        if at_start and first not in mid_sentence:
            ordinary = first in COMMON_CAPITALISED or first.lower() in lower_case
            if len(words) == 1 and not ordinary:
                initial_only.add(first)
            if len(words) == 1 or ordinary:
                words = words[1:]
        while words and words[0] in COMMON_CAPITALISED:
            words = words[1:]
        if words and len(" ".join(words)) >= 3:
            names.add(" ".join(words))
    return _NameEvidence(names, initial_only - names, mid_sentence)


def seed_key(value: str) -> tuple[str, ...]:
    """The words a text would use for a drawn value: "the Quillon scheduler" is found as
    "Quillon scheduler", "Rosario, Argentina" as "Rosario", "Puno on Lake Titicaca" as "Puno"."""
    value = _TRAILING_DETAIL.split(value.strip(), maxsplit=1)[0]
    words = _TOKEN.findall(value)
    if words and words[0].lower() in {"the", "a", "an"}:
        words = words[1:]
    return tuple(words)


class _SeedMentions:
    """Which texts mention which drawn values of one kind of draw (e.g. `ai_name`)."""

    def __init__(self) -> None:
        self.drawn: Counter[str] = Counter()
        self.mentioned: Counter[str] = Counter()
        self.own = 0
        self.with_draw = 0
        self.by_first_word: dict[str, dict[tuple[str, ...], str]] = {}

    def add(self, value: object, tokens: list[str], token_set: set[str]) -> None:
        own = [v for v in (value if isinstance(value, list) else [value]) if _is_text(v)]
        for drawn in own:
            key = seed_key(drawn)
            if key:
                self.drawn[drawn] += 1
                self.by_first_word.setdefault(key[0], {}).setdefault(key, drawn)
        found: set[str] = set()
        # Over the text's own words, not the drawn values: pools may be very large.
        for first in [t for t in token_set if t in self.by_first_word]:
            for key, seen_value in self.by_first_word[first].items():
                if len(key) == 1 or _contains(tokens, key):
                    found.add(seen_value)
        self.mentioned.update(sorted(found))  # sorted: ties break the same way every run
        if own:
            self.with_draw += 1
            self.own += any(v in found for v in own)

    def report(self, n: int) -> dict[str, Any]:
        top_drawn = self.drawn.most_common(1)
        top_mentioned = self.mentioned.most_common(1)
        return {
            "distinct_drawn": len(self.drawn),
            "most_drawn": top_drawn[0][0] if top_drawn else None,
            "most_drawn_share": round(top_drawn[0][1] / n, 4) if top_drawn else 0.0,
            "most_mentioned": top_mentioned[0][0] if top_mentioned else None,
            "most_mentioned_share": round(top_mentioned[0][1] / n, 4) if top_mentioned else 0.0,
            "own_draw_mentioned_share": round(self.own / max(self.with_draw, 1), 4),
        }


def _is_text(value: object) -> bool:
    return isinstance(value, str) and bool(value.strip())


def _contains(tokens: list[str], key: tuple[str, ...]) -> bool:
    first, size, wanted = key[0], len(key), list(key)
    return any(
        tokens[i : i + size] == wanted
        for i, token in enumerate(tokens[: len(tokens) - size + 1])
        if token == first
    )


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
        self.initial_only: Counter[str] = Counter()
        self.mid_sentence: set[str] = set()
        self.seeds = {draw: _SeedMentions() for draw in SEED_DRAWS}

    def run(self, docs: Iterator[Document]) -> Iterator[Document]:
        for doc in docs:
            if self.seen < self.sample:
                self.add(doc.text, doc.axes)
            yield doc

    def add(self, text: str, axes: dict[str, Any] | None = None) -> None:
        self.seen += 1
        written = _WORD.findall(text)
        words = [w.lower() for w in written]
        grams = (words, pairwise(words), zip(words, words[1:], words[2:], strict=False))
        for n, gram in enumerate(grams):
            self.ngrams[n].update(map(hash, gram))
            self.totals[n] += max(len(words) - n, 0)
        stripped = text.strip()
        first = _SENTENCE_END.split(stripped, maxsplit=1)[0][:200]
        self.first_sentences[" ".join(first.lower().split())] += 1
        self.opening_words[" ".join(words[:3])] += 1
        self.openings[" ".join(words[:5])] += 1
        evidence = _name_evidence(stripped, {w for w in set(written) if w.islower()})
        self.names.update(sorted(evidence.names))
        self.initial_only.update(sorted(evidence.initial_only))
        self.mid_sentence |= evidence.mid_sentence
        tokens = _TOKEN.findall(text)
        token_set = set(tokens)
        for draw, mentions in self.seeds.items():
            mentions.add((axes or {}).get(draw), tokens, token_set)

    def report(self) -> dict[str, object]:
        n = max(self.seen, 1)

        def shares(counter: Counter[str]) -> list[dict[str, object]]:
            return [
                {"text": text, "count": count, "share": round(count / n, 4)}
                for text, count in counter.most_common(self.top)
            ]

        names = self.names + Counter(
            {
                word: count
                for word, count in self.initial_only.items()
                if len(word) >= 3 and word in self.mid_sentence
            }
        )
        repeated = sum(c for c in self.openings.values() if c > 1)
        top_first = self.first_sentences.most_common(1)
        return {
            "documents_measured": self.seen,
            "distinct_1": round(len(self.ngrams[0]) / max(self.totals[0], 1), 4),
            "distinct_2": round(len(self.ngrams[1]) / max(self.totals[1], 1), 4),
            "distinct_3": round(len(self.ngrams[2]) / max(self.totals[2], 1), 4),
            "top_first_sentences": shares(self.first_sentences),
            "top_opening_words": shares(self.opening_words),
            "top_names": shares(names),
            "repeated_opening_share": round(repeated / n, 4),
            "top_first_sentence_share": round(top_first[0][1] / n, 4) if top_first else 0.0,
            "seeds_in_text": {draw: m.report(n) for draw, m in self.seeds.items()},
        }
