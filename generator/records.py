"""The one record type that flows through every stage of a build."""

from __future__ import annotations

import dataclasses
import hashlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


def content_id(text: str) -> str:
    """A stable id derived from the text alone, so equal texts share an id across builds."""
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:32]


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


@dataclass(frozen=True)
class Document:
    """A document in flight: the prompt that asked for it, the text that came back,
    and everything needed to reproduce it. The shard schema is these fields."""

    index: int
    family: str
    template: str
    axes: dict[str, Any]
    prompt: str
    seed: int
    text: str = ""
    model: str = ""
    engine: str = ""
    sampling: dict[str, Any] = field(default_factory=dict)
    n_tokens: int = 0
    finish_reason: str = ""
    scores: dict[str, float] = field(default_factory=dict)
    idea: str = ""  # the premise of the idea step, where the family has one
    draft: str = ""  # the document before the revise step, where it ran

    @property
    def id(self) -> str:
        return content_id(self.text)

    def replace(self, **changes: Any) -> Document:
        return dataclasses.replace(self, **changes)
