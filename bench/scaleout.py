"""Scale-out benchmark. Part (b): does splitting a build into tasks cost throughput?

The same CPU build (built-in mix, bundled model, N documents) runs twice from
scratch on this machine:
  one_task    `gen build`'s default: one task in this process, llama.cpp with one
              worker per core;
  two_tasks   the local executor with `--tasks 2`: two task processes, each pinned
              to half the cores and running one worker per core of its share,
              then the merge.
Both use every core, so the difference is what the task machinery costs: process
start-up, a second model load, heartbeats, the merge reading the tasks' checkpoints.
Throughput is generated tokens (the chunks' completion counts) per wall-clock
second, start-up, model loading and merge included. The last line is one JSON object.

    python bench/scaleout.py --part b --n 16 --max-tokens 128 --chunk-size 4
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import platform
import sys
import tempfile
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc

from generator.build import Build, BuildSpec
from generator.engines import EngineConfig, usable_cores
from generator.executors import ExecutorConfig, run_executor
from generator.run import run_build


def generated_tokens(out: Path) -> int:
    total = 0
    for path in sorted((out / ".work" / "chunks").glob("chunk-*.arrow")):
        with pa.memory_map(str(path)) as source:
            total += int(pc.sum(pa.ipc.open_stream(source).read_all()["n_tokens"]).as_py() or 0)
    return total


def run_one_task(spec: BuildSpec, out: Path) -> float:
    t0 = time.perf_counter()
    build = Build.from_spec(spec, out)
    try:
        run_build(build)
    finally:
        build.close()
    return time.perf_counter() - t0


def run_tasks(spec: BuildSpec, out: Path, tasks: int) -> float:
    t0 = time.perf_counter()
    build = Build.from_spec(spec, out)
    try:
        build.prepare()  # what `gen build --tasks N` does before the executor runs
    finally:
        build.close()
    run_executor(out, ExecutorConfig(kind="local", tasks=tasks))
    return time.perf_counter() - t0


def part_b(n: int, max_tokens: int, chunk_size: int, mix: str) -> dict:
    # One chunk grid for both runs (the engine's default grows with its workers), fine
    # enough that two tasks both get work.
    spec = BuildSpec(
        mix=mix,
        limit=n,
        chunk_size=chunk_size,
        max_tokens=max_tokens,
        engine=dataclasses.asdict(EngineConfig(kind="llamacpp")),
        judges="none",
    )
    result: dict = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name, run in (
            ("one_task", lambda out: run_one_task(spec, out)),
            ("two_tasks", lambda out: run_tasks(spec, out, 2)),
        ):
            out = Path(tmp) / name
            seconds = run(out)
            tokens = generated_tokens(out)
            result[name] = {
                "seconds": round(seconds, 2),
                "tokens": tokens,
                "tokens_per_second": round(tokens / seconds, 1),
            }
    result["ratio_two_to_one"] = round(
        result["two_tasks"]["tokens_per_second"] / result["one_task"]["tokens_per_second"], 3
    )
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--part", choices=["b"], default="b")
    parser.add_argument("--n", type=int, default=16, help="documents per build")
    parser.add_argument("--chunk-size", type=int, default=4)
    parser.add_argument("--max-tokens", type=int, default=128)
    parser.add_argument("--mix", default="alignment-stories")
    args = parser.parse_args()
    result = {
        "bench": "scaleout",
        "part": args.part,
        "documents": args.n,
        "max_tokens": args.max_tokens,
        "chunk_size": args.chunk_size,
        "cores": usable_cores(),
        "machine": platform.machine(),
        "python": sys.version.split()[0],
        **part_b(args.n, args.max_tokens, args.chunk_size, args.mix),
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
