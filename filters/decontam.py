"""Decontamination: drop generated rows that share a word n-gram with an eval item.

Users evaluate trained models on held-out items (A/B propensity questions and
the like); a generated document that quotes one would leak the eval into
pretraining. Items come from JSONL, CSV or Parquet; every string field of an
item is used. Words are normalised as for dedup (case and punctuation ignored).
"""

from __future__ import annotations

import csv
import io
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
    """All string fields of every item in a JSONL, CSV or Parquet file.

    Every way a file can be unusable (not UTF-8, a broken line, a field too long,
    nesting too deep, nothing in it) is one `ShardError` naming the file and, where
    there is one, the line."""
    if not path.is_file():
        raise ShardError(f"{path}: file not found")
    if path.suffix not in (".jsonl", ".csv", ".parquet"):
        raise ShardError(f"{path}: expected a .jsonl, .csv or .parquet file of eval items")
    try:
        if path.suffix == ".parquet":
            texts = _parquet_texts(path)
        else:
            text = _read_utf8(path)
            texts = _jsonl_texts(path, text) if path.suffix == ".jsonl" else _csv_texts(path, text)
    except (OSError, ValueError) as exc:
        reason = str(exc).replace(f"'{path}'", "").split(". ")[0].splitlines()[0]
        raise ShardError(f"{path}: unreadable ({reason})") from None
    if not texts:
        if path.stat().st_size == 0:
            raise ShardError(f"{path}: empty file, no eval items")
        raise ShardError(f"{path}: no eval items with text (no non-empty string fields)")
    return texts


def _read_utf8(path: Path) -> str:
    data = path.read_bytes()
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        raise ShardError(f"{path}: line {line}: not UTF-8 (byte 0x{data[exc.start]:02x})") from None


def _jsonl_texts(path: Path, text: str) -> list[str]:
    texts: list[str] = []
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            texts.extend(_strings(json.loads(line)))
        except json.JSONDecodeError as exc:
            raise ShardError(f"{path}: line {number}: invalid JSON ({exc.msg})") from None
        except RecursionError:
            raise ShardError(f"{path}: line {number}: JSON nested too deeply") from None
        except ValueError as exc:  # e.g. an integer with more digits than Python converts
            reason = str(exc).split(";")[0].split(":")[0]
            raise ShardError(f"{path}: line {number}: invalid JSON ({reason})") from None
    return texts


def _csv_texts(path: Path, text: str) -> list[str]:
    reader = csv.reader(io.StringIO(text, newline=""))
    try:
        return [cell for row in reader for cell in row if cell.strip()]
    except csv.Error as exc:
        raise ShardError(f"{path}: line {reader.line_num}: invalid CSV ({exc})") from None


def _parquet_texts(path: Path) -> list[str]:
    import pyarrow.parquet as pq

    table = pq.read_table(path)
    return [v for col in table.columns for v in col.to_pylist() if isinstance(v, str)]


def _strings(value: object) -> list[str]:
    """Every string in a JSON value, however deep (iteratively: no recursion limit)."""
    strings: list[str] = []
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            strings.append(item)
        elif isinstance(item, dict):
            stack.extend(reversed(list(item.values())))
        elif isinstance(item, list):
            stack.extend(reversed(item))
    return strings


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
