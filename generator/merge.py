"""The merge: every task's processed checkpoints -> shards, dropped rows and the manifest.

It never calls a model: judge verdicts, scores, token counts and MinHash
signatures were stored by the tasks. It reads the checkpoints in index order,
so its result does not depend on how many tasks made them or in what order.

Near-duplicates are found in two passes over the checkpoints. Pass one keeps,
per surviving document, only its LSH band hashes (the bands datasketch's
`MinHashLSH` would use); grouping equal band values gives the candidate pairs.
Pass two reads the signatures of the candidates alone and keeps the pairs whose
estimated Jaccard similarity reaches the threshold; a document is dropped when
an earlier one resembles it, exactly as the one-at-a-time index decides. Memory
is about 8 bytes per band per document plus the candidates' signatures.
"""

from __future__ import annotations

import dataclasses
import json
import re
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from filters.decontam import Decontaminate
from filters.dedup import DedupConfig
from filters.diversity import Diversity
from filters.leakage import LeakageGate
from filters.minhash import band_hashes, candidate_pairs, earliest_duplicates, lsh_bands
from filters.stage import Drop, StageStats
from generator import __version__
from generator.build import Build, Progress
from generator.checkpoints import (
    Chunk,
    folder_refusal,
    list_chunks,
    locked,
    read_json,
    remove_temporaries,
    write_batch_atomic,
)
from generator.errors import BuildError
from generator.records import Document, file_sha256
from shards.format import from_batch, to_dropped_batch
from shards.manifest import MANIFEST, MANIFEST_FORMAT, Manifest, ShardEntry
from shards.writer import atomic_path, write_json_atomic, write_shards

NEAR_DUPLICATES = "near-duplicates.json"
DROPPED = "dropped"
OUTPUTS = "outputs.json"
_SHARD_NAME = re.compile(r"^shard-\d{5}\.arrow$")


def merge(out: Path, *, progress: Progress | None = None, execution: dict | None = None) -> dict:
    """Merge the build recorded in `out`, holding its lock; what executors call."""
    build = Build.from_folder(out, progress)
    try:
        with locked(build.work / "lock", folder_refusal(out)):
            return merge_build(build, execution or {})
    finally:
        build.progress.close()


def merge_build(build: Build, execution: dict[str, Any]) -> dict[str, Any]:
    """Merge a prepared build whose lock the caller holds."""
    state = build.state
    progress = build.progress
    processed = build.work / "processed" / state["processing_key"]
    # Only the merge writes these files, and the caller holds the folder's lock.
    for pattern in ("shard-*.arrow", MANIFEST, NEAR_DUPLICATES):
        remove_temporaries(build.out, pattern, lambda name: True)
    remove_temporaries(build.out / DROPPED, "shard-*.arrow", lambda name: True)
    chunks = _coverage(build, processed)
    progress.phase("merging: finding duplicates", total=len(chunks))
    plan = plan_duplicates(chunks, build.documents, build.mix.dedup, progress)
    (build.out / MANIFEST).unlink(missing_ok=True)
    progress.phase("merging: writing shards", total=build.documents)
    filters = _Filters(build, plan, processed)
    docs = filters.diversity.run(filters.run(_documents(chunks, build.documents), progress))
    shards = write_shards(docs, build.out, build.mix.shards)
    filters.dropped.close()
    _remove_stale(
        build, {s.path for s in shards} | {f"{DROPPED}/{n}" for n in filters.dropped.names}
    )
    dropped_counts = Counter[str]()
    for stats in filters.stats:
        dropped_counts.update(stats.dropped)
    manifest = Manifest(
        format=MANIFEST_FORMAT,
        package_version=__version__,
        mix={"name": build.mix.name, "ref": build.mix.source, "sha256": build.mix.sha256},
        config=build.resolved_config(),
        config_hash=state["config_hash"],
        generation_key=state["generation_key"],
        seed=build.mix.seed,
        engine=state["engine"],
        model=state["model"],
        templates={n: build.library.family(n).ref for n in sorted(build.mix.families)},
        counts={
            "planned": build.documents,
            "generated": filters.stats[0].seen,
            "kept": filters.tally.rows,
            "dropped": dict(sorted(dropped_counts.items())),
        },
        stages=[s.to_dict() for s in filters.stats],
        documents_per_family=dict(sorted(filters.tally.documents.items())),
        tokens={
            "total": sum(filters.tally.tokens.values()),
            "per_family": dict(sorted(filters.tally.tokens.items())),
            "counted_with": "engine counts, recounted with the model tokenizer where cleaning "
            "changed the text",
        },
        shards=[ShardEntry(s.path, s.rows, s.bytes, s.sha256) for s in shards],
        dropped_shards=filters.dropped.entries,
        diversity=filters.diversity.report(),
        judges=filters.judge_report,
        near_duplicates=None,
        leakage=filters.leakage.describe() if filters.leakage else None,
        reproducibility=read_json(build.work / "reproducibility.json"),
        execution={**execution, "tasks_report": _task_report(build)},
    )
    if build.mix.dedup.enabled:
        with atomic_path(build.out / NEAR_DUPLICATES) as tmp:
            tmp.write_text(json.dumps(filters.duplicate_of, indent=2) + "\n", encoding="utf-8")
        manifest = dataclasses.replace(
            manifest, near_duplicates={"file": NEAR_DUPLICATES, "count": len(filters.duplicate_of)}
        )
    write_json_atomic(build.out / MANIFEST, manifest.to_dict())
    return manifest.to_dict()


# -- coverage ------------------------------------------------------------------------------


def _coverage(build: Build, processed: Path) -> list[Chunk]:
    """The processed chunks for [0, documents), in order; refuses with the missing ranges."""
    chunks, bad = list_chunks(processed)
    seen = np.zeros(build.documents, dtype=bool)
    use: list[Chunk] = []
    for chunk in chunks:
        if chunk.first >= build.documents:
            continue
        span = seen[chunk.first : min(chunk.end, build.documents)]
        if span.all():
            continue  # a duplicate checkpoint of documents already covered
        use.append(chunk)
        span[:] = True
    if not seen.all():
        missing = np.flatnonzero(~seen)
        ranges = _ranges(missing)
        shown = ", ".join(f"{a}-{b - 1}" if b - a > 1 else str(a) for a, b in ranges[:5])
        more = f" and {len(ranges) - 5} more ranges" if len(ranges) > 5 else ""
        raise BuildError(
            f"{build.out}: {missing.size} of {build.documents} documents are not generated yet "
            f"(documents {shown}{more}); run the unfinished tasks (gen status {build.out}) "
            "and merge again"
        )
    del bad
    return use


def _ranges(indices: np.ndarray) -> list[tuple[int, int]]:
    breaks = np.flatnonzero(np.diff(indices) != 1)
    starts = np.r_[indices[0], indices[breaks + 1]]
    ends = np.r_[indices[breaks], indices[-1]] + 1
    return list(zip(starts.tolist(), ends.tolist(), strict=True))


def _read(path: Path, columns: list[str] | None = None) -> pa.Table:
    with pa.OSFile(str(path), "rb") as source:
        table = pa.ipc.open_stream(source).read_all()
    return table.select(columns) if columns else table


# -- pass one and two: which documents are duplicates -----------------------------------


@dataclass
class DuplicatePlan:
    exact_duplicates: set[int] = field(default_factory=set)
    near_duplicate_of: dict[int, int] = field(default_factory=dict)  # index -> earlier index


def plan_duplicates(
    chunks: list[Chunk], documents: int, config: DedupConfig, progress: Progress
) -> DuplicatePlan:
    """Passes one and two over the processed chunks: which documents are exact and
    near duplicates (of which earlier document)."""
    indices: list[np.ndarray] = []
    keys: list[np.ndarray] = []
    bands_parts: list[np.ndarray] = []
    locations: list[tuple[int, np.ndarray]] = []  # (chunk number, rows in that chunk)
    b, r = lsh_bands(config.threshold, config.num_perm) if config.enabled else (0, 0)
    for number, chunk in enumerate(chunks):
        table = _read(chunk.path, ["doc_index", "drop_reason", "text_key", "minhash"])
        index = table["doc_index"].to_numpy()
        alive = table["drop_reason"].is_null().to_numpy(zero_copy_only=False)
        alive &= (index < documents) & (index >= chunk.first)
        rows = np.flatnonzero(alive)
        indices.append(index[rows])
        keys.append(_keys(table["text_key"].take(rows)))
        locations.append((number, rows))
        if config.enabled:
            signatures = _signatures(table["minhash"].take(rows), config.num_perm)
            bands_parts.append(band_hashes(signatures, b, r))
        progress.advance(1)
    plan = DuplicatePlan()
    if not indices:
        return plan
    index = np.concatenate(indices)
    key = np.concatenate(keys)
    _, first = np.unique(key, return_index=True)
    unique = np.zeros(index.size, dtype=bool)
    unique[first] = True
    plan.exact_duplicates = set(index[~unique].tolist())
    if not config.enabled:
        return plan
    positions = np.flatnonzero(unique)
    bands = np.concatenate(bands_parts)[positions]
    a, c = candidate_pairs(bands)
    if a.size == 0:
        return plan
    # Pass two: the signatures of candidates only, read back from their chunks.
    needed = np.unique(np.r_[a, c])
    signature = _candidate_signatures(chunks, locations, positions[needed], config.num_perm)
    lookup = {int(p): k for k, p in enumerate(needed)}
    sa = signature[[lookup[int(p)] for p in a]]
    sc = signature[[lookup[int(p)] for p in c]]
    similarity = np.count_nonzero(sa == sc, axis=1) / config.num_perm
    earliest = earliest_duplicates(a, c, similarity >= config.threshold, bands.shape[0])
    for later in np.flatnonzero(earliest >= 0):
        plan.near_duplicate_of[int(index[positions[later]])] = int(
            index[positions[earliest[later]]]
        )
    return plan


def _signatures(column: pa.ChunkedArray | pa.Array, num_perm: int) -> np.ndarray:
    """(rows, num_perm) uint32 signatures straight from the Arrow buffers, no Python
    objects per row: every non-null value is num_perm little-endian uint32s."""
    array = column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column
    if len(array) == 0:
        return np.zeros((0, num_perm), dtype=np.uint32)
    width = num_perm * 4
    offsets = np.frombuffer(array.buffers()[1], dtype=np.int32)[
        array.offset : array.offset + len(array) + 1
    ]
    data = np.frombuffer(array.buffers()[2], dtype=np.uint8)
    positions = offsets[:-1, None] + np.arange(width)
    return data[positions].view("<u4").reshape(len(array), num_perm)


def _keys(column: pa.ChunkedArray | pa.Array) -> np.ndarray:
    """The 16-byte exact-duplicate keys as a numpy bytes array, from the Arrow buffer."""
    array = column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column
    if len(array) == 0:
        return np.zeros(0, dtype="S16")
    data = np.frombuffer(array.buffers()[1], dtype="S16")
    return data[array.offset : array.offset + len(array)].copy()


def _candidate_signatures(
    chunks: list[Chunk], locations: list[tuple[int, np.ndarray]], wanted: np.ndarray, num_perm: int
) -> np.ndarray:
    """Signatures of the rows at global alive-row positions `wanted` (sorted)."""
    out = np.empty((wanted.size, num_perm), dtype=np.uint32)
    offset = 0
    cursor = 0
    for number, rows in locations:
        end = offset + rows.size
        hi = np.searchsorted(wanted, end)
        if hi > cursor:
            local = rows[wanted[cursor:hi] - offset]
            table = _read(chunks[number].path, ["minhash"])
            out[cursor:hi] = _signatures(table["minhash"].take(local), num_perm)
            cursor = hi
        offset = end
    return out


# -- pass three: stream, filter, write -------------------------------------------------


def _documents(chunks: list[Chunk], documents: int) -> Iterator[tuple[Document, str | None]]:
    """Every processed row in index order, with the task's drop reason (None: kept)."""
    for chunk in chunks:
        table = _read(chunk.path)
        reasons = table["drop_reason"].to_pylist()
        base = table.drop_columns(["drop_reason", "text_key", "minhash"])
        rows = (doc for batch in base.to_batches() for doc in from_batch(batch))
        for doc, reason in zip(rows, reasons, strict=True):
            if chunk.first <= doc.index < documents:
                yield doc, reason


class _Filters:
    """The merge's filter chain: (counter, verdict) steps built once, in the order a single
    process applies them, each counting in and out and drops by reason."""

    def __init__(self, build: Build, plan: DuplicatePlan, processed: Path) -> None:
        self.build, self.plan = build, plan
        mix = build.mix
        self.reason: str | None = None  # the task's own verdict on the current row
        steps: list[tuple[str, Callable[[Document], Document | Drop]]] = [
            ("clean", lambda d: Drop(self.reason) if self.reason else d),
            ("exact-dedup", lambda d: Drop("duplicate") if d.index in plan.exact_duplicates else d),
        ]
        if mix.dedup.enabled:
            steps.append(("near-dedup", self._near))
        steps.append(("score", lambda d: _minimums(d, mix.scores.minimums)))
        self.decontaminate = Decontaminate(build.decontaminate) if build.decontaminate else None
        if self.decontaminate:
            steps.append(("decontaminate", self.decontaminate.process))
        sets = build.eval_sets()
        self.leakage = LeakageGate(sets) if sets else None
        if self.leakage:
            steps.append(("leakage", self.leakage.process))
        evaluations = read_json(processed / "judges.json") or {}
        self.judge_minimums: dict[str, float] = {}
        self.judge_report: dict[str, Any] = {}
        for name, minimum in sorted(build.active_judges.items()):
            evaluation = evaluations.get(name, {})
            reliable = bool(evaluation.get("reliable"))
            if not reliable:
                build.warn(
                    f"warning: the {name} judge ({evaluation.get('engine')}, "
                    f"{evaluation.get('model')}) scored {evaluation.get('accuracy', 0):.2f} on "
                    "the validation set (needs 0.80): its scores are kept but no rows are "
                    "dropped on them"
                )
            if reliable and minimum is not None:
                self.judge_minimums[name] = minimum
            self.judge_report[name] = {
                **evaluation,
                "minimum": minimum,
                "drops_rows": reliable and minimum is not None,
                "unparsed_in_build": 0,
            }
            steps.append((f"judge-{name}", lambda d, n=name: self._judged(d, n)))
        self.steps = [(StageStats(name), verdict) for name, verdict in steps]
        self.stats = [stats for stats, _ in self.steps]
        self.duplicate_of: dict[str, str] = {}
        self.ids: dict[int, str] = {}
        self.tally = _Tally()
        self.diversity = Diversity()
        score_names = sorted({*mix.scores.minimums, *build.active_judges})
        self.dropped = _DroppedWriter(build.out / DROPPED, score_names, mix.shards.max_rows)

    def run(self, docs: Iterator[tuple[Document, str | None]], progress: Progress):
        originals = set(self.plan.near_duplicate_of.values())
        for doc, reason in docs:
            progress.advance(1)
            if doc.index in originals:
                self.ids[doc.index] = doc.id
            self.reason = reason
            verdict = self._verdict(doc)
            if isinstance(verdict, Drop):
                self.dropped.add(doc, verdict.reason)
                continue
            self.tally.add(doc)
            yield doc

    def _verdict(self, doc: Document) -> Document | Drop:
        for stats, verdict in self.steps:
            stats.seen += 1
            result = verdict(doc)
            if isinstance(result, Drop):
                stats.dropped[result.reason] += 1
                return result
            stats.kept += 1
            doc = result
        return doc

    def _judged(self, doc: Document, name: str) -> Document | Drop:
        if doc.scores.get(name) is None:
            self.judge_report[name]["unparsed_in_build"] += 1
        return _minimums(doc, {name: self.judge_minimums.get(name)})

    def _near(self, doc: Document) -> Document | Drop:
        original = self.plan.near_duplicate_of.get(doc.index)
        if original is None:
            return doc
        self.duplicate_of[doc.id] = self.ids[original]
        return Drop("near-duplicate")


def _minimums(doc: Document, minimums: dict[str, float | None]) -> Document | Drop:
    """Drop below a minimum (the first failing name in sorted order gives the reason);
    a missing score (an unparsed judge reply) never drops."""
    low = [
        name
        for name in sorted(minimums)
        if minimums[name] is not None
        and doc.scores.get(name) is not None
        and doc.scores[name] < minimums[name]
    ]
    return Drop(f"low-{low[0]}") if low else doc


class _Tally:
    def __init__(self) -> None:
        self.rows = 0
        self.documents: Counter[str] = Counter()
        self.tokens: Counter[str] = Counter()

    def add(self, doc: Document) -> None:
        self.rows += 1
        self.documents[doc.family] += 1
        self.tokens[doc.family] += doc.n_tokens


class _DroppedWriter:
    """`OUT/dropped/shard-*.arrow`: every dropped row with its reason, so a user can read
    what the filters removed (`gen inspect OUT --dropped`)."""

    def __init__(self, folder: Path, score_names: list[str], max_rows: int) -> None:
        self.folder, self.score_names, self.max_rows = folder, score_names, max_rows
        self.pending: list[tuple[Document, str]] = []
        self.names: list[str] = []
        self.entries: list[ShardEntry] = []

    def add(self, doc: Document, reason: str) -> None:
        self.pending.append((doc, reason))
        if len(self.pending) >= min(self.max_rows, 4096):
            self._flush()

    def _flush(self) -> None:
        if not self.pending:
            return
        self.folder.mkdir(exist_ok=True)
        batch = to_dropped_batch(self.pending, self.score_names)
        name = f"shard-{len(self.names):05d}.arrow"
        path = self.folder / name
        write_batch_atomic(path, batch)
        self.names.append(name)
        self.entries.append(
            ShardEntry(f"{DROPPED}/{name}", batch.num_rows, path.stat().st_size, file_sha256(path))
        )
        self.pending = []

    def close(self) -> None:
        self._flush()


def _remove_stale(build: Build, keep: set[str]) -> None:
    """Remove shards an earlier merge of this build wrote and this one did not: only
    files its own records name, never anything else in the folder."""
    record = build.work / OUTPUTS
    previous = read_json(record)
    named = set(previous.get("files", [])) if isinstance(previous, dict) else set()
    for name in sorted(named - keep):
        parts = name.split("/")
        if (
            len(parts) > 2
            or not _SHARD_NAME.match(parts[-1])
            or (len(parts) == 2 and parts[0] != DROPPED)
        ):
            continue
        path = build.out / name
        if path.is_file() and not path.is_symlink():
            path.unlink()
    write_json_atomic(record, {"files": sorted(keep), "written": time.time()})


def _task_report(build: Build) -> list[dict[str, Any]]:
    """Each task's documents, tokens and wall time, from its completion marker."""
    report = []
    for path in sorted((build.work / "tasks").glob("task-*-of-*.json")):
        data = read_json(path)
        if isinstance(data, dict) and data.get("state") == "done":
            report.append(
                {
                    k: data.get(k)
                    for k in ("rank", "world_size", "documents", "tokens", "wall_seconds", "host")
                }
            )
    return report
