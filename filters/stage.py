"""The one step contract: a stage consumes documents and yields the ones it keeps.

A stage author writes `process(doc)`, returning the (possibly changed) document
or a `Drop` with a reason. The base class counts what comes in, what goes out
and every drop by reason, so the manifest can account for each row.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

from generator.records import Document


@dataclass(frozen=True)
class Drop:
    reason: str


@dataclass
class StageStats:
    name: str
    seen: int = 0
    kept: int = 0
    dropped: Counter[str] = field(default_factory=Counter)

    def to_dict(self) -> dict[str, object]:
        return {
            "stage": self.name,
            "in": self.seen,
            "out": self.kept,
            "dropped": dict(sorted(self.dropped.items())),
        }


class Stage:
    """Per-document stages write `process`; stages that work best on many documents at
    once (bulk MinHash, model judges) write `process_batch` and set `batch_size`."""

    name: str = "stage"
    batch_size: int = 1

    def __init__(self) -> None:
        self.stats = StageStats(self.name)

    def process(self, doc: Document) -> Document | Drop:
        raise NotImplementedError

    def process_batch(self, docs: list[Document]) -> list[Document | Drop]:
        return [self.process(doc) for doc in docs]

    def run(self, docs: Iterable[Document]) -> Iterator[Document]:
        batch: list[Document] = []
        for doc in docs:
            batch.append(doc)
            if len(batch) >= self.batch_size:
                yield from self._count(batch)
                batch = []
        if batch:
            yield from self._count(batch)

    def _count(self, batch: list[Document]) -> Iterator[Document]:
        results = self.process_batch(batch)
        for result in results:
            self.stats.seen += 1
            if isinstance(result, Drop):
                self.stats.dropped[result.reason] += 1
                continue
            self.stats.kept += 1
            yield result


def run_pipeline(docs: Iterable[Document], stages: Iterable[Stage]) -> Iterator[Document]:
    """Chain stages lazily, so documents stream through without being held in memory."""
    for stage in stages:
        docs = stage.run(docs)
    yield from docs
