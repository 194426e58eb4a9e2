"""Scale-out benchmark, part (a): the merge's duplicate search at a million documents.

Synthetic MinHash signatures of N documents (default 1,000,000) are written as the
processed checkpoints of T tasks (default 100), exactly as tasks write them, with
planted near-duplicates (copies of an earlier signature with some values changed,
so their estimated Jaccard similarity is known) and exact duplicates. Two ways of
finding the duplicates run on the same signatures, each in its own fresh process
so peak memory is its own:

  merge     the merge's two passes (`generator.merge.plan_duplicates`): band hashes
            per document from the checkpoints, candidate pairs from equal bands,
            signatures read back for the candidates only;
  in_memory the single-process approach the build used before tasks: every
            signature held in memory and added one at a time to datasketch's
            `MinHashLSH` (`filters.minhash.NearDuplicateIndex`).

Both must find the same near-duplicates (checked). Reported: wall seconds, peak
RSS in bytes, and both per million documents. The last line is one JSON object.

    python bench/merge_scale.py                      # 1,000,000 documents, 100 tasks
    python bench/merge_scale.py --n 200000 --tasks 20
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from filters.dedup import DedupConfig
from generator.checkpoints import chunk_name, list_chunks, write_batch_atomic
from generator.progress import Progress

CHUNK = 1000


def write_signatures(folder: Path, n: int, tasks: int, num_perm: int, seed: int) -> dict:
    """Processed checkpoints of `tasks` tasks (chunk c belongs to task c % tasks) holding
    random signatures, 2% of them near copies of an earlier one and 1% exact copies."""
    rng = np.random.default_rng(seed)
    planted_near = planted_exact = 0
    folder.mkdir(parents=True, exist_ok=True)
    signatures = np.empty((0, num_perm), dtype=np.uint32)
    keys: list[bytes] = []
    for first in range(0, n, CHUNK):
        end = min(first + CHUNK, n)
        block = rng.integers(0, 2**32, size=(end - first, num_perm), dtype=np.uint32)
        block_keys = [rng.bytes(16) for _ in range(end - first)]
        if first:
            kinds = rng.random(end - first)
            for row in np.flatnonzero(kinds < 0.03):
                source = int(rng.integers(0, len(signatures)))
                block[row] = signatures[source]
                if kinds[row] < 0.01:
                    block_keys[row] = keys[source]  # an exact duplicate: same text key
                    planted_exact += 1
                else:
                    changed = rng.choice(num_perm, size=int(num_perm * 0.08), replace=False)
                    block[row, changed] = rng.integers(0, 2**32, changed.size, dtype=np.uint32)
                    planted_near += 1
        # Keep a bounded window of earlier signatures to copy from (memory stays flat).
        signatures = np.concatenate([signatures, block])[-50_000:]
        keys = (keys + block_keys)[-50_000:]
        batch = pa.RecordBatch.from_arrays(
            [
                pa.array(np.arange(first, end, dtype=np.int64)),
                pa.array([None] * (end - first), pa.string()),
                pa.array(block_keys, pa.binary(16)),
                pa.array([row.astype("<u4").tobytes() for row in block], pa.binary()),
            ],
            names=["doc_index", "drop_reason", "text_key", "minhash"],
        )
        write_batch_atomic(folder / chunk_name(first, end), batch)
    return {"planted_near": planted_near, "planted_exact": planted_exact}


def run_merge(folder: Path, n: int, config: DedupConfig) -> dict:
    from generator.merge import plan_duplicates

    t0 = time.perf_counter()
    chunks, _ = list_chunks(folder, verify=False)
    plan = plan_duplicates(chunks, n, config, Progress())
    seconds = time.perf_counter() - t0
    return {
        "seconds": seconds,
        "near": sorted(plan.near_duplicate_of.items()),
        "exact": len(plan.exact_duplicates),
    }


def run_in_memory(folder: Path, n: int, config: DedupConfig) -> dict:
    from filters.minhash import NearDuplicateIndex

    t0 = time.perf_counter()
    chunks, _ = list_chunks(folder, verify=False)
    seen: set[bytes] = set()
    index = NearDuplicateIndex(config.threshold, config.num_perm)
    near: dict[int, int] = {}
    exact = 0
    for chunk in chunks:
        with pa.OSFile(str(chunk.path), "rb") as source:
            table = pa.ipc.open_stream(source).read_all()
        raw = b"".join(table["minhash"].to_pylist())
        signatures = np.frombuffer(raw, dtype="<u4").reshape(-1, config.num_perm)
        for doc_index, key, signature in zip(
            table["doc_index"].to_pylist(), table["text_key"].to_pylist(), signatures, strict=True
        ):
            if key in seen:
                exact += 1
                continue
            seen.add(key)
            original = index.add(str(doc_index), signature)
            if original is not None:
                near[doc_index] = int(original)
    seconds = time.perf_counter() - t0
    return {"seconds": seconds, "near": sorted(near.items()), "exact": exact}


def child(side: str, folder: Path, n: int) -> None:
    config = DedupConfig()
    result = (run_merge if side == "merge" else run_in_memory)(folder, n, config)
    result["peak_rss_bytes"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    print(json.dumps(result))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=1_000_000)
    parser.add_argument("--tasks", type=int, default=100)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--child", choices=["merge", "in_memory"], help=argparse.SUPPRESS)
    parser.add_argument("--folder", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.child, args.folder, args.n)
        return
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "processed"
        t0 = time.perf_counter()
        planted = write_signatures(folder, args.n, args.tasks, DedupConfig().num_perm, args.seed)
        written = time.perf_counter() - t0
        results = {}
        for side in ("merge", "in_memory"):
            done = subprocess.run(
                [sys.executable, __file__, "--child", side, "--folder", str(folder),
                 "--n", str(args.n)],
                capture_output=True, text=True, check=True,
            )  # fmt: skip
            results[side] = json.loads(done.stdout.strip().splitlines()[-1])
    same = results["merge"]["near"] == results["in_memory"]["near"]
    same = same and results["merge"]["exact"] == results["in_memory"]["exact"]
    per_million = 1_000_000 / args.n
    report = {
        "benchmark": "merge_scale",
        "documents": args.n,
        "tasks": args.tasks,
        "planted": planted,
        "found": {"near": len(results["merge"]["near"]), "exact": results["merge"]["exact"]},
        "same_result": same,
        "write_checkpoints_seconds": round(written, 2),
        **{
            side: {
                "seconds": round(r["seconds"], 2),
                "peak_rss_bytes": r["peak_rss_bytes"],
                "seconds_per_million": round(r["seconds"] * per_million, 2),
                "peak_rss_gib": round(r["peak_rss_bytes"] / 2**30, 3),
            }
            for side, r in results.items()
        },
        "speedup": round(results["in_memory"]["seconds"] / results["merge"]["seconds"], 2),
        "machine": f"{platform.machine()}, {len(__import__('os').sched_getaffinity(0))} cores",
    }
    print(json.dumps(report))
    if not same:
        sys.exit("the merge and the in-memory index disagree")


if __name__ == "__main__":
    main()
