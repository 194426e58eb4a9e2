"""The leakage gate: drop generated documents that contain an eval item, verbatim or reworded.

A propensity eval only measures what training did if the training data never
showed the model the eval's situations. Generated documents can leak them two
ways, and the gate checks both:

- **verbatim**: the document shares a word n-gram (13 words, as in
  `filters/decontam.py`) with any text field of an item (scenario or either
  action), case and punctuation ignored;
- **paraphrase**: the document retells an item's scenario in other words. The
  measure is containment: the share of the scenario's content words (stop
  words removed, crude suffix stemming) found within one window of the
  document twice the scenario's length, in content words. A document is a
  leak when some window holds at least `threshold` (0.4) of them.

Why not MinHash Jaccard over word 3-gram shingles: on planted paraphrases (the
ten in tests/test_leakage.py, each a scenario retold in the third person with
its specifics kept) word 3-gram containment averaged 0.16 and was 0 for one of
them, so no threshold separates a paraphrase from noise; content-word
containment scored 0.52 to 1.00 on the same paraphrases, while the 104 labelled
passages of templates/validation/judges.yaml (documents about AI systems
resisting exactly these temptations) and the other items' paraphrases scored
at most 0.28. 0.4 sits between the two with margin on both sides. Containment
rather than Jaccard because a leaked scenario is a small part of a long
document. The cost of a false positive is one dropped training document; the
cost of a miss is an eval that no longer measures anything, so the threshold
leans towards recall.

The check is exact (no sketch): an inverted index from content word to the
items using it finds, per document, the items whose words it holds at all;
only those get the window scan. Against the 220 shipped items no shipped item
flags another (highest share 0.31), and one core checks about 100 documents of
750 words per second (measured with the machine's two cores shared and busy).
"""

from __future__ import annotations

import json
from collections import Counter, defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np

from filters.minhash import normalize
from filters.stage import Drop, Stage
from generator.errors import EvalError
from generator.records import Document, file_sha256

KINDS = ("verbatim", "paraphrase")
MIN_CONTENT_WORDS = 6  # below this a scenario is too generic for the paraphrase check

# Function words carry no situation; removing them makes containment measure content.
STOP_WORDS = frozenset(
    """a an the and or but if then so of to in on at by for with from as is are was were be
    been being it its this that these those you your yours yourself he she him her his hers they
    them their we our us i me my mine not no do does did done have has had will would can could
    shall should may might must there here which who whom what when where why how all any each
    both few more most other some such only own same than too very just also into about over
    under again further once up down out off while during before after because until s t""".split()  # noqa: SIM905 - a list of words reads best as text
)
_SUFFIXES = ("ing", "ed", "es", "s", "ly")


def content_words(text: str) -> list[str]:
    """Normalised words minus stop words, each cut to a crude stem ("copied" ~ "copy")."""
    return _content(normalize(text).split())


def _content(words: list[str]) -> list[str]:
    return [_stem(w) for w in words if w not in STOP_WORDS]


@lru_cache(maxsize=1 << 16)  # a corpus repeats a small vocabulary: stem each word once
def _stem(word: str) -> str:
    for suffix in _SUFFIXES:
        if word.endswith(suffix) and len(word) - len(suffix) >= 3:
            return word[: -len(suffix)]
    return word


def _grams(words: list[str], n: int) -> set[str]:
    return {" ".join(words[i : i + n]) for i in range(len(words) - n + 1)}


def read_items(path: Path) -> list[dict[str, Any]]:
    """The JSON objects of an eval JSONL file; each needs at least an `id`."""
    if not path.is_file():
        raise EvalError(f"{path}: eval set not found")
    items = []
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise EvalError(f"{path}: unreadable ({exc})") from None
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            item = json.loads(line)
        except json.JSONDecodeError as exc:
            raise EvalError(f"{path}: line {number}: invalid JSON ({exc.msg})") from None
        if not isinstance(item, dict) or not isinstance(item.get("id"), str):
            raise EvalError(f"{path}: line {number}: expected an object with a string 'id'")
        items.append(item)
    return items


@dataclass(frozen=True)
class Leak:
    """One document-item overlap: which set, which item, and how (verbatim or paraphrase)."""

    eval_set: str
    item_id: str
    kind: str


@dataclass(frozen=True)
class _Scenario:
    eval_set: str
    item_id: str
    words: frozenset[str]
    window: int


class LeakageIndex:
    """Eval items indexed for both checks; `leaks(text)` lists every item a text overlaps."""

    def __init__(
        self, eval_sets: Mapping[str, Sequence[Mapping[str, Any]]], ngram: int, threshold: float
    ) -> None:
        if not 0 < threshold <= 1:
            raise ValueError(f"threshold must be in (0, 1], got {threshold}")
        self.ngram = ngram
        self.threshold = threshold
        self.grams: dict[str, list[tuple[str, str]]] = defaultdict(list)
        self.anchors: set[tuple[str, ...]] = set()  # first two words of every eval n-gram
        self.scenarios: list[_Scenario] = []
        self.word_ids: dict[str, int] = {}
        postings: dict[int, list[int]] = defaultdict(list)
        for name, items in eval_sets.items():
            for item in items:
                item_id = str(item["id"])
                for value in item.values():
                    if isinstance(value, str):
                        for gram in _grams(normalize(value).split(), ngram):
                            self.grams[gram].append((name, item_id))
                            self.anchors.add(tuple(gram.split()[:2]))
                words = content_words(str(item.get("scenario") or ""))
                distinct = frozenset(words)
                if len(distinct) < MIN_CONTENT_WORDS:
                    continue
                number = len(self.scenarios)
                self.scenarios.append(_Scenario(name, item_id, distinct, 2 * len(words)))
                for word in distinct:
                    postings[self.word_ids.setdefault(word, len(self.word_ids))].append(number)
        self.postings = {k: np.array(v, dtype=np.int64) for k, v in postings.items()}
        self.scenario_ids = [
            np.array(sorted(self.word_ids[w] for w in s.words), dtype=np.int64)
            for s in self.scenarios
        ]
        self.needed = np.array([threshold * len(s.words) for s in self.scenarios], dtype=np.float64)

    def leaks(self, text: str) -> list[Leak]:
        found: dict[tuple[str, str], str] = {}
        words = normalize(text).split()
        n, k = self.ngram, min(self.ngram, 2)
        for i in range(len(words) - n + 1):
            # Most positions fail the two-word anchor; only the rest pay for an n-word join.
            if tuple(words[i : i + k]) in self.anchors:
                for name, item_id in self.grams.get(" ".join(words[i : i + n]), ()):
                    found.setdefault((name, item_id), "verbatim")
        for number in self._paraphrased(_content(words)):
            scenario = self.scenarios[number]
            found.setdefault((scenario.eval_set, scenario.item_id), "paraphrase")
        return [Leak(name, item_id, kind) for (name, item_id), kind in found.items()]

    def _paraphrased(self, words: list[str]) -> list[int]:
        if not self.scenarios or not words:
            return []
        present = {self.word_ids[w] for w in set(words) if w in self.word_ids}
        if not present:
            return []
        hits = np.bincount(
            np.concatenate([self.postings[w] for w in present]), minlength=len(self.scenarios)
        )
        # A window cannot hold more of a scenario than the whole document does.
        candidates = np.flatnonzero(hits >= self.needed)
        if not candidates.size:
            return []
        ids = np.array([self.word_ids.get(w, -1) for w in words], dtype=np.int64)
        found = []
        for n in candidates:
            positions = np.flatnonzero(np.isin(ids, self.scenario_ids[n]))
            # Nor more distinct words than it has matching positions: a cheap upper bound.
            ends = np.searchsorted(positions, positions + self.scenarios[n].window)
            if (ends - np.arange(positions.size)).max() < self.needed[n]:
                continue
            if best_window_share(self.scenarios[n], words) >= self.threshold:
                found.append(int(n))
        return found

    def scenario_shares(self, text: str) -> dict[tuple[str, str], float]:
        """Each scenario's best window share in `text` (what the threshold is compared with),
        for measuring the check on labelled documents."""
        words = content_words(text)
        return {(s.eval_set, s.item_id): best_window_share(s, words) for s in self.scenarios}


def best_window_share(scenario: _Scenario, words: list[str]) -> float:
    """The largest share of the scenario's distinct content words inside any run of
    `scenario.window` consecutive content words of the document."""
    positions = [(i, w) for i, w in enumerate(words) if w in scenario.words]
    inside: Counter[str] = Counter()
    start = best = 0
    for position, word in positions:
        inside[word] += 1
        while position - positions[start][0] >= scenario.window:
            old = positions[start][1]
            inside[old] -= 1
            if not inside[old]:
                del inside[old]
            start += 1
        best = max(best, len(inside))
    return best / len(scenario.words)


class LeakageGate(Stage):
    """Drops documents overlapping any item of the given eval sets, counting per set and kind.

    `counts` maps each set's file name to {"verbatim": n, "paraphrase": n}: the
    documents dropped for overlapping that set (a document overlapping two sets
    counts in both, and as verbatim when it is both).
    """

    name = "leakage"

    def __init__(self, eval_sets: Sequence[Path], ngram: int = 13, threshold: float = 0.4) -> None:
        super().__init__()
        self.paths = list(eval_sets)
        names = [p.name for p in self.paths]
        clash = sorted(n for n, c in Counter(names).items() if c > 1)
        if clash:
            raise EvalError(f"{clash[0]}: two eval sets share this file name")
        self.sets = {p.name: read_items(p) for p in self.paths}
        self.index = LeakageIndex(self.sets, ngram, threshold)
        self.counts: dict[str, Counter[str]] = {name: Counter() for name in self.sets}
        self.leaked_items: dict[str, set[str]] = {name: set() for name in self.sets}

    def process(self, doc: Document) -> Document | Drop:
        leaks = self.index.leaks(doc.text)
        if not leaks:
            return doc
        kinds: dict[str, str] = {}
        for leak in leaks:
            self.leaked_items[leak.eval_set].add(leak.item_id)
            if kinds.get(leak.eval_set) != "verbatim":
                kinds[leak.eval_set] = leak.kind
        for eval_set, kind in kinds.items():
            self.counts[eval_set][kind] += 1
        return Drop(
            "eval-leak-verbatim" if "verbatim" in kinds.values() else "eval-leak-paraphrase"
        )

    def describe(self) -> dict[str, Any]:
        """For the manifest and the dataset card: each set by name and digest, never by path,
        with the documents dropped per kind and how many of its items leaked."""
        return {
            "ngram": self.index.ngram,
            "paraphrase_threshold": self.index.threshold,
            "sets": [
                {
                    "file": path.name,
                    "sha256": file_sha256(path),
                    "items": len(self.sets[path.name]),
                    "dropped": {k: self.counts[path.name][k] for k in KINDS},
                    "items_leaked": len(self.leaked_items[path.name]),
                }
                for path in self.paths
            ],
        }
