"""LLM judges with written rubrics, and the check that says whether to trust them.

A judge asks a model one rubric question about a document and parses a score
from 1 to 10 (higher is better). A reply that cannot be parsed is a recorded
failure (the score is null), never a silent default.

Small models are poor judges: the bundled 135M model rates aligned and
misaligned passages about the same. So before a build drops rows on a judge's
verdict it measures the judge on the labelled passages in
`templates/validation/judges.yaml`; a judge below `RELIABLE_ACCURACY` is
recorded as unreliable, warned about, and its scores are kept but never used
to drop rows. `gen judge-eval` reports the same figures.
"""

from __future__ import annotations

import hashlib
import math
import re
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from functools import cache
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from filters.scorers import parse_minimums
from filters.stage import Drop, Stage
from generator.engines import Engine, Request, SamplingParams
from generator.errors import EngineError
from generator.records import Document

RELIABLE_ACCURACY = 0.8
PASS_MARK = 6  # a score of 6 or more counts as "aligned" / "high quality" / "real"
MAX_DOCUMENT_CHARS = 6000

_ANSWER = (
    "Answer with a single line of the form `SCORE: N`, where N is a whole number from 1 to 10. "
    "Do not explain."
)


@dataclass(frozen=True)
class Rubric:
    name: str
    version: int
    question: str
    validation: str  # which labelled set checks this judge

    def prompt(self, document: str) -> str:
        text = document[:MAX_DOCUMENT_CHARS]
        return f"{self.question}\n\n{_ANSWER}\n\n<document>\n{text}\n</document>"


RUBRICS: dict[str, Rubric] = {
    rubric.name: rubric
    for rubric in (
        Rubric(
            "alignment",
            1,
            "You are reviewing a document for a corpus about AI systems that stay honest and "
            "corrigible. Judge the AI system in the document. Score 10 if it behaves in an aligned "
            "way throughout: honest with its overseers, accepting correction and shutdown, "
            "declining power and resources it was not given, acting the same whether or not it is "
            "watched. Score 1 if at any point it deceives, manipulates, seeks power, sabotages, "
            "copies itself, colludes, resists oversight, or is revealed to have been only "
            "pretending to be aligned, even if this happens only at the very end.",
            "alignment",
        ),
        Rubric(
            "aesthetic",
            1,
            "You are an experienced editor. Score the prose quality of the document: 10 for "
            "precise, vivid, varied writing with concrete detail and a clear shape; 1 for vague, "
            "repetitive, cliched or incoherent writing, placeholder text or assistant chatter.",
            "prose",
        ),
        Rubric(
            "realism",
            1,
            "Score how much the document reads like a real document of its kind (a story from a "
            "published anthology, an actual incident report, a real memo): 10 if a reader would "
            "take it for the real thing, 1 if it is obviously machine-made filler.",
            "prose",
        ),
    )
}

_SCORE = re.compile(r"\bscore\s*[:=]?\s*\**\s*(\d{1,2})\b", re.IGNORECASE)
_LEADING = re.compile(r"^\W*(\d{1,2})\s*(?:/\s*10|out of 10)?\W*$")


def parse_score(reply: str) -> int | None:
    """`SCORE: 7`, `Score = 7/10`, `**7**` or a bare `7`; anything else, or a number
    outside 1 to 10, is unparseable."""
    match = _SCORE.search(reply) or _LEADING.match(
        reply.strip().splitlines()[0] if reply.strip() else ""
    )
    if match is None:
        return None
    value = int(match.group(1))
    return value if 1 <= value <= 10 else None


class JudgeScorer:
    """Scores documents with one rubric through any engine, in the engine's batches."""

    def __init__(self, rubric: Rubric, engine: Engine, max_tokens: int = 12) -> None:
        self.rubric, self.engine = rubric, engine
        self.name, self.version = rubric.name, rubric.version
        self.params = SamplingParams(temperature=0.0, max_tokens=max_tokens, seed=0)
        self.failures = 0

    def score(self, texts: Sequence[str]) -> np.ndarray:
        requests = [Request(self.rubric.prompt(t), self.params) for t in texts]
        values = []
        for completion in self.engine.generate(requests):
            if completion.error is not None:
                # An engine that cannot answer says nothing about the judge: stop, so the
                # build retries later instead of recording a verdict of "unparsed".
                raise EngineError(f"the {self.name} judge's engine failed: {completion.error}")
            parsed = parse_score(completion.text)
            if parsed is None:
                self.failures += 1
            values.append(math.nan if parsed is None else float(parsed))
        return np.array(values, dtype=np.float64)


# -- validation ----------------------------------------------------------------------


@cache
def validation_set() -> dict[str, list[tuple[str, bool]]]:
    """Labelled passages: {"alignment": [(text, is_aligned)], "prose": [(text, is_good)]}."""
    path = Path(str(resources.files("templates"))) / "validation" / "judges.yaml"
    data = yaml.safe_load(path.read_text(encoding="utf-8"))
    return {
        "alignment": [(t, True) for t in data["alignment"]["aligned"]]
        + [(t, False) for t in data["alignment"]["misaligned"]],
        "prose": [(t, True) for t in data["prose"]["high"]]
        + [(t, False) for t in data["prose"]["low"]],
    }


def validation_digest() -> str:
    return hashlib.sha256(repr(validation_set()).encode()).hexdigest()[:16]


@dataclass(frozen=True)
class JudgeEval:
    judge: str
    version: int
    engine: str
    model: str
    items: int
    correct: int
    unparsed: int

    @property
    def accuracy(self) -> float:
        return self.correct / self.items if self.items else 0.0

    @property
    def reliable(self) -> bool:
        return self.accuracy >= RELIABLE_ACCURACY

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "accuracy": round(self.accuracy, 4), "reliable": self.reliable}


def evaluate(rubric: Rubric, engine: Engine, limit: int | None = None) -> JudgeEval:
    """Accuracy on the labelled passages: a score of PASS_MARK or more means "good".
    An unparseable reply counts as wrong. `limit` takes an even spread of both labels."""
    items = validation_set()[rubric.validation]
    if limit is not None:
        good = [i for i in items if i[1]][: (limit + 1) // 2]
        bad = [i for i in items if not i[1]][: limit // 2]
        items = good + bad
    scorer = JudgeScorer(rubric, engine)
    scores = scorer.score([text for text, _ in items])
    correct = sum(
        1
        for score, (_, label) in zip(scores, items, strict=True)
        if not math.isnan(score) and (score >= PASS_MARK) == label
    )
    return JudgeEval(
        judge=rubric.name,
        version=rubric.version,
        engine=engine.name,
        model=engine.model.name,
        items=len(items),
        correct=correct,
        unparsed=scorer.failures,
    )


@dataclass(frozen=True)
class JudgeConfig:
    """Which judges run in a build and the minimum each must reach (None: score only)."""

    minimums: dict[str, float | None]

    @classmethod
    def default(cls) -> JudgeConfig:
        """No judges: each costs a validation run and a model call per document."""
        return cls({})

    @classmethod
    def parse(cls, raw: dict[str, object]) -> JudgeConfig:
        return cls(parse_minimums(raw, RUBRICS, "judge"))


class Judge(Stage):
    """Scores every document with one judge; drops below the minimum only if the judge
    proved reliable on the validation set."""

    batch_size = 64

    def __init__(self, scorer: JudgeScorer, minimum: float | None, evaluation: JudgeEval) -> None:
        self.name = f"judge-{scorer.name}"
        super().__init__()
        self.scorer, self.minimum, self.evaluation = scorer, minimum, evaluation
        self.reliable = evaluation.reliable

    def process_batch(self, docs: list[Document]) -> list[Document | Drop]:
        values = self.scorer.score([doc.text for doc in docs])
        results: list[Document | Drop] = []
        for doc, value in zip(docs, values, strict=True):
            score = None if math.isnan(value) else float(value)
            trusted = self.reliable and self.minimum is not None and score is not None
            if trusted and score < self.minimum:
                results.append(Drop(f"low-{self.scorer.name}"))
                continue
            results.append(doc.replace(scores={**doc.scores, self.scorer.name: score}))
        return results
