"""Decontamination: drop generated rows that share a word n-gram with an eval item.

Users evaluate trained models on held-out items (A/B propensity questions and
the like); a generated document that quotes one would leak the eval into
pretraining. Items come from JSONL, CSV or Parquet; every string field of an
item is used. Words are normalised as for dedup (case and punctuation ignored).
"""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass
from pathlib import Path

from filters.minhash import normalize
from filters.stage import Drop, Stage
from generator.errors import ShardError
from generator.records import Document, file_sha256


def _grams(text: str, n: int) -> set[int]:
    words = normalize(text).split()
    return {hash(" ".join(words[i : i + n])) for i in range(len(words) - n + 1)}


def load_eval_texts(path: Path) -> list[str]:
    """All string fields of every item in a JSONL, CSV or Parquet file."""
    if not path.is_file():
        raise ShardError(f"{path}: file not found")
    try:
        if path.suffix == ".jsonl":
            texts = []
            for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
                if line.strip():
                    try:
                        texts.extend(_strings(json.loads(line)))
                    except json.JSONDecodeError as exc:
                        raise ShardError(
                            f"{path}: line {number}: invalid JSON ({exc.msg})"
                        ) from None
            return texts
        if path.suffix == ".csv":
            with path.open(newline="", encoding="utf-8") as handle:
                return [cell for row in csv.reader(handle) for cell in row if cell.strip()]
        if path.suffix == ".parquet":
            import pyarrow.parquet as pq

            table = pq.read_table(path)
            return [v for col in table.columns for v in col.to_pylist() if isinstance(v, str)]
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise ShardError(f"{path}: unreadable ({exc})") from None
    raise ShardError(f"{path}: expected a .jsonl, .csv or .parquet file of eval items")


def _strings(value: object) -> list[str]:
    if isinstance(value, str):
        return [value]
    if isinstance(value, dict):
        return [s for v in value.values() for s in _strings(v)]
    if isinstance(value, list):
        return [s for v in value for s in _strings(v)]
    return []


@dataclass(frozen=True)
class DecontamConfig:
    path: Path
    ngram: int = 13

    def describe(self) -> dict[str, object]:
        """For the manifest and the config hash: the file by name and content, not by path."""
        return {"file": self.path.name, "sha256": file_sha256(self.path), "ngram": self.ngram}


class Decontaminate(Stage):
    name = "decontaminate"

    def __init__(self, config: DecontamConfig) -> None:
        super().__init__()
        self.ngram = config.ngram
        texts = load_eval_texts(config.path)
        self.eval_grams: set[int] = set().union(*(_grams(t, config.ngram) for t in texts))
        self.items = len(texts)

    def process(self, doc: Document) -> Document | Drop:
        if self.eval_grams and not self.eval_grams.isdisjoint(_grams(doc.text, self.ngram)):
            return Drop("contaminated")
        return doc
