"""Deduplication stages: exact (normalised text) and near (MinHash LSH).

Both keep the first document of each cluster in build order, so a build's
output never depends on timing or batch boundaries.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa

from filters.minhash import MinHasher, NearDuplicateIndex
from filters.stage import Drop, Stage
from generator.errors import ShardError
from generator.records import Document, content_id
from generator.validators import is_int, is_number
from shards.format import foreign_files, read_foreign
from shards.writer import RollingShards, staged_folder

_WS = re.compile(r"\s+")


class ExactDedup(Stage):
    """Keep the first document of each text (case and whitespace ignored), in build order.

    Holds one 16-byte digest per kept document: about 100 MB for a million
    documents with Python's set overhead, which is why it hashes rather than
    keeping texts.
    """

    name = "exact-dedup"

    def __init__(self) -> None:
        super().__init__()
        self._seen: set[bytes] = set()

    def process(self, doc: Document) -> Document | Drop:
        key = hashlib.blake2b(_WS.sub(" ", doc.text).strip().lower().encode(), digest_size=16)
        digest = key.digest()
        if digest in self._seen:
            return Drop("duplicate")
        self._seen.add(digest)
        return doc


@dataclass(frozen=True)
class DedupConfig:
    """Near-duplicate settings, set in a mix's `dedup:` section or on the command line."""

    enabled: bool = True
    threshold: float = 0.8
    ngram: int = 5
    num_perm: int = 128

    def __post_init__(self) -> None:
        if not isinstance(self.enabled, bool):
            raise ValueError(f"invalid value {self.enabled!r} for enabled")
        if not is_number(self.threshold) or not 0 < self.threshold <= 1:
            raise ValueError(f"invalid value {self.threshold!r} for threshold")
        for name in ("ngram", "num_perm"):
            value = getattr(self, name)
            if not is_int(value) or value < 1:
                raise ValueError(f"invalid value {value!r} for {name}")

    def hasher(self) -> MinHasher:
        return MinHasher(num_perm=self.num_perm, ngram=self.ngram)

    def index(self) -> NearDuplicateIndex:
        return NearDuplicateIndex(threshold=self.threshold, num_perm=self.num_perm)


class NearDedup(Stage):
    """Drop documents whose shingle sets are at least `threshold` similar (Jaccard,
    estimated by MinHash) to an earlier kept document; `duplicate_of` maps each
    dropped id to the id it duplicates."""

    name = "near-dedup"
    batch_size = 256

    def __init__(self, config: DedupConfig) -> None:
        super().__init__()
        self.hasher = config.hasher()
        self.index = config.index()
        self.duplicate_of: dict[str, str] = {}

    def process_batch(self, docs: list[Document]) -> list[Document | Drop]:
        signatures = self.hasher.signatures([doc.text for doc in docs])
        results: list[Document | Drop] = []
        for doc, signature in zip(docs, signatures, strict=True):
            original = self.index.add(doc.id, signature)
            if original is None:
                results.append(doc)
            else:
                self.duplicate_of[doc.id] = original
                results.append(Drop("near-duplicate"))
        return results


def dedup_files(
    paths: list[Path],
    out: Path,
    config: DedupConfig,
    max_rows: int = 100_000,
    format: str = "arrow",
) -> dict[str, Any]:
    """Near-deduplicate any Arrow or Parquet files with a `text` column into `out`.

    Rows keep their columns (an `id` column, the sha256 of the text, is added
    where there is none) and their order; the first row of each cluster is
    kept. Writes `shard-NNNNN.arrow` files and `dedup-report.json` into `out`,
    which appears complete or not at all.
    """
    files = foreign_files(paths)
    hasher, index = config.hasher(), config.index()
    clusters: dict[str, list[str]] = {}
    root_of: dict[str, str] = {}
    rows_in = rows_kept = 0
    schema: pa.Schema | None = None
    with staged_folder(out) as staging:
        shards = RollingShards(staging, max_rows, format)
        for path in files:
            for batch in read_foreign(path):
                batch = _with_ids(batch)
                if schema is None:
                    schema = batch.schema
                elif not batch.schema.equals(schema):
                    raise ShardError(f"{path}: columns differ from {files[0]}")
                texts = batch.column("text").to_pylist()
                ids = batch.column("id").to_pylist()
                keep = []
                for row_id, signature in zip(ids, hasher.signatures(texts), strict=True):
                    original = index.add(str(row_id), signature)
                    keep.append(original is None)
                    if original is not None:  # file it under the cluster's kept row
                        root = root_of.get(original, original)
                        root_of[str(row_id)] = root
                        clusters.setdefault(root, []).append(str(row_id))
                kept = batch.filter(pa.array(keep))
                rows_in += batch.num_rows
                rows_kept += kept.num_rows
                shards.write(kept)
        shards.close()
        report = {
            "inputs": [str(p) for p in files],
            "rows_in": rows_in,
            "rows_kept": rows_kept,
            "near_duplicates": rows_in - rows_kept,
            "config": dataclasses.asdict(config),
            "shards": shards.names,
            "clusters": [{"kept": k, "duplicates": v} for k, v in clusters.items()],
        }
        (staging / "dedup-report.json").write_text(json.dumps(report, indent=2) + "\n")
    return report


def _with_ids(batch: pa.RecordBatch) -> pa.RecordBatch:
    if "id" in batch.schema.names:
        return batch
    ids = pa.array([content_id(t or "") for t in batch.column("text").to_pylist()])
    return pa.RecordBatch.from_arrays([ids, *batch.columns], names=["id", *batch.schema.names])
