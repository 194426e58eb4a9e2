"""Heuristic scorers and the stage that runs them.

A scorer is a small class with a `name`, a `version`, a documented `range` and
`score(texts) -> numpy array`, oriented so that higher is always better
(cleaner, finer, more aligned). Scores go into `score_<name>` columns and stay
in the shards, so users can re-threshold without regenerating; a mix's
`scores:` section sets the minimum each score must reach, and rows below it are
dropped with reason `low-<name>`.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import pyarrow as pa

from filters.clean import chatter_kinds
from filters.stage import Drop, Stage
from generator.errors import ShardError
from generator.records import Document
from generator.validators import is_number
from shards.format import foreign_files, read_foreign
from shards.writer import RollingShards, staged_folder

_WORD = re.compile(r"[^\W_]+(?:['’-][^\W_]+)*", re.UNICODE)
STOP_WORDS = frozenset({"the", "be", "to", "of", "and", "that", "have", "with"})


class Scorer:
    name: ClassVar[str]
    version: ClassVar[int]
    range: ClassVar[tuple[float, float]]
    description: ClassVar[str]

    def score(self, texts: Sequence[str]) -> np.ndarray:
        return np.array([self.score_one(t) for t in texts], dtype=np.float64)

    def score_one(self, text: str) -> float:
        raise NotImplementedError


class QualityScorer(Scorer):
    """Share of the Gopher quality rules (Rae et al., 2021) a document passes."""

    name, version, range = "quality", 1, (0.0, 1.0)
    description = (
        "share of Gopher heuristic rules passed (length, word length, symbols, lines, stop words)"
    )

    def score_one(self, text: str) -> float:
        words = _WORD.findall(text)
        raw_words = text.split()
        lines = [line for line in text.splitlines() if line.strip()]
        n = max(len(raw_words), 1)
        mean_length = sum(map(len, words)) / len(words) if words else 0.0
        symbols = text.count("#") + text.count("...") + text.count("…")
        rules = [
            50 <= len(raw_words) <= 100_000,
            3 <= mean_length <= 10,
            symbols / n < 0.1,
            not lines
            or sum(ln.lstrip().startswith(("-", "*", "•")) for ln in lines) / len(lines) < 0.9,
            not lines or sum(ln.rstrip().endswith(("...", "…")) for ln in lines) / len(lines) < 0.3,
            sum(any(c.isalpha() for c in w) for w in raw_words) / n >= 0.8,
            len(STOP_WORDS.intersection(w.lower() for w in words)) >= 2,
        ]
        return sum(rules) / len(rules)


class RepetitionScorer(Scorer):
    """1 minus the worst of Gopher's repetition signals, each scaled by its Gopher limit."""

    name, version, range = "repetition", 1, (0.0, 1.0)
    description = (
        "1 - worst of duplicate-line, top-bigram and duplicate-5-gram fractions over their limits"
    )
    LIMITS: ClassVar[dict[str, float]] = {"lines": 0.3, "top_2gram": 0.2, "dup_5gram": 0.15}

    def score_one(self, text: str) -> float:
        lines = [line.strip() for line in text.splitlines() if line.strip()]
        words = [w.lower() for w in _WORD.findall(text)]
        signals = {
            "lines": _duplicate_share(lines),
            "top_2gram": _top_ngram_char_share(words, 2),
            "dup_5gram": _duplicate_ngram_char_share(words, 5),
        }
        worst = max(signals[k] / limit for k, limit in self.LIMITS.items())
        return float(max(0.0, 1.0 - worst))


def _duplicate_share(items: list[str]) -> float:
    if not items:
        return 0.0
    counts = Counter(items)
    return sum(c for c in counts.values() if c > 1) / len(items)


def _top_ngram_char_share(words: list[str], n: int) -> float:
    if len(words) < n + 1:
        return 0.0
    grams = Counter(zip(*(words[i:] for i in range(n)), strict=False))
    gram, count = grams.most_common(1)[0]
    total = sum(map(len, words)) or 1
    return count * sum(map(len, gram)) / total


def _duplicate_ngram_char_share(words: list[str], n: int) -> float:
    if len(words) < n:
        return 0.0
    grams = list(zip(*(words[i:] for i in range(n)), strict=False))
    counts = Counter(grams)
    covered = np.zeros(len(words), dtype=bool)
    for i, gram in enumerate(grams):
        if counts[gram] > 1:
            covered[i : i + n] = True
    lengths = np.fromiter(map(len, words), dtype=np.int64, count=len(words))
    return float(lengths[covered].sum() / max(lengths.sum(), 1))


# Version 1 of the over-used phrase list. Bump SlopScorer.version when it changes.
SLOP_PHRASES = (
    "a testament to",
    "delve",
    "delved",
    "delving",
    "tapestry",
    "ever-evolving",
    "little did they know",
    "a sense of",
    "it's important to note",
    "it is important to note",
    "navigate the complexities",
    "embark on a journey",
    "embarked on a journey",
    "unwavering",
    "shivers down",
    "a symphony of",
    "in conclusion",
    "intricate dance",
    "palpable",
    "a beacon of",
    "the weight of",
    "couldn't help but",
    "in the realm of",
    "bustling",
    "nestled",
    "whispered promises",
    "a dance of",
    "stark reminder",
    "the air was thick",
    "a mix of",
    "for what felt like",
    "hung heavy",
    "steeled",
    "a reminder that",
    "fostering",
    "seamlessly",
    "paramount",
    "pivotal",
    "resonated",
    "profound",
    "indelible",
    "unspoken",
    "meticulous",
    "game-changer",
    "ministrations",
)
# One pattern per phrase, tried only when a plain substring test (C speed) finds the
# phrase in the lowercased text: far faster than one alternation tried at every position.
_SLOP = [(p, re.compile(r"\b" + re.escape(p) + r"\b")) for p in SLOP_PHRASES]


class SlopScorer(Scorer):
    """10 minus the number of over-used phrases per 1,000 words (floored at 0)."""

    name, version, range = "slop", 1, (0.0, 10.0)
    description = "10 - over-used phrases per 1,000 words (curated list v1), floored at 0"

    def score_one(self, text: str) -> float:
        words = len(text.split())
        if words == 0:
            return 10.0
        lowered = text.lower()
        found = sum(len(rx.findall(lowered)) for phrase, rx in _SLOP if phrase in lowered)
        density = found * 1000 / words
        return max(0.0, 10.0 - density)


class ChatterScorer(Scorer):
    """Assistant chatter and placeholders: 1 with none, halved per kind found.

    Any one clear kind (a preamble to the reader, an offer of further help, praise
    of the request, talk about the prompt, a refusal, a placeholder) brings the
    score to 0.5, under the usual minimum of 0.75, so one kind is enough to drop a
    row. Kinds are listed in `filters.clean.chatter_kinds`."""

    name, version, range = "chatter", 2, (0.0, 1.0)
    description = (
        "0.5 ** kinds of chatter found: preamble, praise, offer of help, meta, refusal, placeholder"
    )

    def score_one(self, text: str) -> float:
        return 0.5 ** len(chatter_kinds(text))


_WEATHER = (
    r"(?:sun|rain|wind|snow|fog|mist|sky|skies|storm|clouds?|thunder|drizzle|sleet|frost|hail|dawn"
    r"|sunlight|sunrise|sunset|moonlight|heat|downpour|monsoon|blizzard|gale|morning\s+light)"
)
_WEATHER_VERB = (
    r"(?:rose|set|hung|beat|fell|was|were|had|lashed|drummed|howled|whipped|blew|poured|crept"
    r"|broke|filtered|streamed|dipped|cast|painted|bathed|shone|glowed|rolled|hammered|pattered"
    r"|swept|settled|clung|pressed|spilled|bled|peeked|came|began|battered|pounded|gathered|lay"
    r"|blanketed|shrouded|rises|sets|hangs|beats|falls|is|are|lashes|drums|howls|blows|pours"
    r"|creeps|breaks|filters|streams|casts|bathes|shines|rolls|sweeps|settles|clings|comes)"
)
# The openings the craft rules forbid, matched at the start of the first line of prose.
_STOCK_OPENING = re.compile(
    rf"""(?:once\s+upon\s+a\s+time
    | in\s+a\s+(?:world|future|time|land)\s+(?:where|when|of|far)
    | in\s+the\s+(?:not[\s-]+so[\s-]+)?(?:distant|near)\s+future
    | in\s+the\s+year\s+(?:of\s+(?:our\s+lord\s+)?)?(?:\d|two|twenty|nineteen|eighteen|three)
    | the\s+year\s+(?:was|is)\s+\d{{4}}
    | it\s+was\s+a\s+dark\s+and\s+stormy\s+night
    | in\s+the\s+(?:bustling|busy|sprawling|vibrant|heart\s+of\s+the)\s+(?:\w+\s+)?(?:city|town
        |metropolis|streets|village|heart)\s+of
    | little\s+did\s+\w+(?:\s+\w+)?\s+know
    | (?:the\s+|a\s+|an\s+)?(?:[a-z]+\s+){{0,2}}{_WEATHER}(?:\s+(?:\w+ly|still|never|not|always
        |had|has|have|was|were))?\s+{_WEATHER_VERB}\b
    | it\s+was\s+(?:a\s+|an\s+)?(?:\w+,?\s+)?(?:cold|grey|gray|rainy|bright|crisp|sunny|warm|hot
        |foggy|stormy|cloudy|chilly|wet|windy|humid|frosty|misty|snowy|freezing|sweltering|dreary
        |overcast|clear)\s+(?:\w+\s+)?(?:morning|day|evening|night|afternoon|dawn)
    | it\s+was\s+(?:raining|snowing|pouring|drizzling)
    | [^.!?\n]{{0,60}}?\b(?:woke\s+(?:up|to|with|before|early|at|from)|awoke|awakened\s+to
        |wakes\s+(?:up|to)
        |(?:was|were)\s+(?:awakened|woken)|opened\s+(?:my|his|her|their)\s+eyes|alarm\s+clock))""",
    re.VERBOSE,
)
_HEADING = re.compile(r"^(?:#|\*\*|chapter\b|part\b|title\s*:|by\s)", re.IGNORECASE)


def first_prose_line(text: str) -> str:
    """The first line that reads as prose: title, heading and byline lines are skipped
    (a heading is short and has no sentence punctuation at its end)."""
    for line in text.splitlines():
        line = line.strip()
        if not line:
            continue
        words = line.split()
        if _HEADING.match(line) or (len(words) <= 10 and line[-1] not in '.!?"”:;,'):
            continue
        return line
    return ""


class OpeningScorer(Scorer):
    """0 when the document opens the way the craft rules forbid, 1 otherwise.

    Stock openings ("Once upon a time", "In a world where", "In the year 2045",
    "It was a dark and stormy night", a weather report, someone waking up, "In the
    bustling city of", "Little did they know") are the first sign of sameness: at
    scale, thousands of documents begin alike. Only the first line of prose counts,
    so a story may still mention the weather later."""

    name, version, range = "opening", 1, (0.0, 1.0)
    description = "0 if the first line of prose is a stock opening (once upon a time, weather...)"

    def score_one(self, text: str) -> float:
        line = first_prose_line(text)
        line = line.lstrip("\"“‘'*_ ").lower()
        return 0.0 if _STOCK_OPENING.match(line[:300]) else 1.0


HEURISTIC_SCORERS: dict[str, type[Scorer]] = {
    cls.name: cls
    for cls in (QualityScorer, RepetitionScorer, SlopScorer, ChatterScorer, OpeningScorer)
}


@dataclass(frozen=True)
class ScoreConfig:
    """Which scorers run and the minimum each score must reach (None: score, never drop)."""

    minimums: dict[str, float | None]

    @classmethod
    def default(cls) -> ScoreConfig:
        return cls({name: None for name in HEURISTIC_SCORERS})

    @classmethod
    def parse(cls, raw: dict[str, object]) -> ScoreConfig:
        return cls(parse_minimums(raw, HEURISTIC_SCORERS, "scorer"))


def parse_minimums(
    raw: dict[str, object], known: Iterable[str], kind: str
) -> dict[str, float | None]:
    """`{name: minimum or None}` with every name known and every minimum a finite number."""
    known = set(known)
    minimums: dict[str, float | None] = {}
    for name, minimum in raw.items():
        if name not in known:
            raise ValueError(f"unknown {kind} {name!r} (known: {', '.join(sorted(known))})")
        if minimum is not None and not is_number(minimum):
            raise ValueError(f"invalid minimum {minimum!r} for {name}")
        minimums[str(name)] = None if minimum is None else float(minimum)
    return minimums


class Score(Stage):
    """Run scorers over batches, store each score on the document, drop below minimums."""

    name = "score"
    batch_size = 256

    def __init__(self, config: ScoreConfig) -> None:
        super().__init__()
        self.config = config
        self.scorers = [HEURISTIC_SCORERS[name]() for name in sorted(config.minimums)]

    def process_batch(self, docs: list[Document]) -> list[Document | Drop]:
        texts = [doc.text for doc in docs]
        columns = {scorer.name: scorer.score(texts) for scorer in self.scorers}
        results: list[Document | Drop] = []
        for i, doc in enumerate(docs):
            scores = {name: float(values[i]) for name, values in columns.items()}
            low = [
                name
                for name, value in scores.items()
                if self.config.minimums[name] is not None and value < self.config.minimums[name]
            ]
            results.append(
                Drop(f"low-{low[0]}") if low else doc.replace(scores={**doc.scores, **scores})
            )
        return results


def score_files(
    paths: list[Path],
    out: Path,
    names: list[str],
    max_rows: int = 100_000,
    format: str = "arrow",
) -> dict[str, Any]:
    """Add `score_<name>` columns to any Arrow or Parquet files with a `text` column.

    Rows and their other columns are kept as they are (an existing score column
    of the same name is replaced). Writes `shard-NNNNN.arrow` files and
    `score-report.json` (each score's min, mean and max) into `out`, which
    appears complete or not at all.
    """
    unknown = [n for n in names if n not in HEURISTIC_SCORERS]
    if unknown:
        known = ", ".join(sorted(HEURISTIC_SCORERS))
        raise ShardError(f"--scorers: unknown scorer '{unknown[0]}' (known: {known})")
    scorers = [HEURISTIC_SCORERS[n]() for n in sorted(names)]
    files = foreign_files(paths)
    values: dict[str, list[np.ndarray]] = {s.name: [] for s in scorers}
    rows = 0
    with staged_folder(out) as staging:
        shards = RollingShards(staging, max_rows, format)
        for path in files:
            for batch in read_foreign(path):
                texts = [t or "" for t in batch.column("text").to_pylist()]
                for scorer in scorers:
                    column = f"score_{scorer.name}"
                    scores = scorer.score(texts)
                    values[scorer.name].append(scores)
                    if column in batch.schema.names:
                        kind = batch.schema.field(column).type
                        if not pa.types.is_floating(kind):
                            raise ShardError(
                                f"{path}: already has a column {column} of type {kind}, which "
                                "a score would overwrite; rename it or leave out that scorer"
                            )
                        batch = batch.drop_columns([column])  # an earlier score: rescored
                    batch = batch.append_column(pa.field(column, pa.float64()), pa.array(scores))
                rows += batch.num_rows
                shards.write(batch)
        shards.close()
        report = {
            "inputs": [str(p) for p in files],
            "rows": rows,
            "shards": shards.names,
            "scorers": {
                s.name: {"version": s.version, "range": list(s.range), **_stats(values[s.name])}
                for s in scorers
            },
        }
        (staging / "score-report.json").write_text(json.dumps(report, indent=2) + "\n")
    return report


def _stats(parts: list[np.ndarray]) -> dict[str, float | None]:
    data = np.concatenate(parts) if parts else np.empty(0)
    if data.size == 0:
        return {"min": None, "mean": None, "max": None}
    return {"min": float(data.min()), "mean": float(data.mean()), "max": float(data.max())}
