"""A build split into tasks, killed and resumed, equals the same build in one process.

Real generation (the bundled model on llama.cpp) with a tiny template family so each
build takes seconds. Tasks run in this process through `execute_task` (what every
executor calls) and as `gen task` subprocesses for the kill tests; the executors'
own tests (local processes, Slurm, Ray) check the same equality end to end.
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from generator.build import Build, BuildSpec
from generator.engines import EngineConfig
from generator.errors import BuildError
from generator.merge import merge, merge_build
from generator.run import run_build
from generator.task import execute_task, run_task
from tests.helpers import write

FAMILY = """\
version: 1
template: memo.j2
axes:
  subject: [a pump station, a ferry timetable, a seed bank, a tide gauge, a night shift, a clinic]
  tone: [dry, warm, terse]
"""
TEMPLATE = "Write three {{ tone }} sentences about {{ subject }}."
MIX = """\
name: split
documents: 100
seed: 11
families:
  memo: 1
sampling:
  temperature: 0.8
  top_p: 0.95
  max_tokens: 16
filters:
  min_words: 2
  drop_truncated: false
scores:
  quality: 0.5
  repetition: null
judges: {}
shards:
  max_rows: 3
"""
LIMIT = 12
CHUNK = 2


@pytest.fixture(scope="module")
def project(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("split")
    write(root / "templates" / "families" / "memo.yaml", FAMILY)
    write(root / "templates" / "families" / "memo.j2", TEMPLATE)
    write(root / "split.yaml", MIX)
    return root


def spec(project: Path, **changes) -> BuildSpec:
    base = BuildSpec(
        mix=str(project / "split.yaml"),
        templates_dir=str(project / "templates"),
        limit=LIMIT,
        chunk_size=CHUNK,
        engine={**EngineConfig(kind="llamacpp", workers=1).__dict__},
    )
    return BuildSpec(**{**base.to_dict(), **changes})


@pytest.fixture(scope="module")
def engine():
    """One loaded model for every in-process build of this module."""
    from generator.engines.llamacpp import LlamaCppEngine

    with LlamaCppEngine(workers=1, threads_per_worker=1) as shared:
        yield shared


def in_process(project: Path, out: Path, engine, world_size: int) -> dict:
    build = Build.from_spec(spec(project), out)
    build.engine_instance = engine
    build.prepare()
    if world_size == 1:
        return run_build(build).manifest
    for rank in reversed(range(world_size)):  # any order: the result must not care
        execute_task(build, rank, world_size)
    return merge_build(build, execution={"executor": "test", "tasks": world_size})


def fingerprint(out: Path) -> dict[str, str]:
    """sha256 of every shard (kept and dropped), near-duplicates.json and the manifest
    apart from how the build ran."""
    files = sorted([*out.glob("shard-*.arrow"), *out.glob("dropped/shard-*.arrow")])
    digests = {str(p.relative_to(out)): hashlib.sha256(p.read_bytes()).hexdigest() for p in files}
    manifest = json.loads((out / "manifest.json").read_text())
    manifest.pop("execution")
    digests["manifest"] = hashlib.sha256(json.dumps(manifest, sort_keys=True).encode()).hexdigest()
    return digests


@pytest.fixture(scope="module")
def single(project, engine, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("single") / "out"
    in_process(project, out, engine, 1)
    return out


@pytest.mark.parametrize("world_size", [3, 4])
def test_a_build_split_into_tasks_equals_the_single_process_build(
    project, engine, single, tmp_path, world_size
):
    out = tmp_path / "out"
    manifest = in_process(project, out, engine, world_size)
    assert manifest["counts"]["generated"] == LIMIT
    assert fingerprint(out) == fingerprint(single)
    assert len(list(single.glob("shard-*.arrow"))) >= 2
    assert manifest["execution"]["tasks"] == world_size
    assert {t["rank"] for t in manifest["execution"]["tasks_report"]} == set(range(world_size))


def test_a_merge_of_unfinished_tasks_names_the_missing_documents(project, engine, tmp_path):
    build = Build.from_spec(spec(project), tmp_path / "out")
    build.engine_instance = engine
    build.prepare()
    execute_task(build, 0, 3)
    with pytest.raises(
        BuildError, match=r"8 of 12 documents are not generated yet \(documents 2-5, 8-11\)"
    ):
        merge_build(build, execution={})


def gen(*args: str) -> subprocess.Popen:
    env = {**os.environ, "GEN_WORKERS": "1"}
    return subprocess.Popen(
        [sys.executable, "-m", "generator", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=env,
    )


def test_a_task_killed_mid_chunk_and_rerun_gives_the_same_shards(project, single, tmp_path):
    out = tmp_path / "out"
    build = Build.from_spec(spec(project), out)
    build.prepare()  # what gen build does before it hands OUT to an executor
    build.close()
    task = gen("task", str(out), "--rank", "0", "--world-size", "2")
    chunks = out / ".work" / "chunks"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and len(list(chunks.glob("chunk-*.arrow"))) < 1:
        time.sleep(0.05)
    task.send_signal(signal.SIGKILL)
    task.wait()
    assert len(list(chunks.glob("chunk-*.arrow"))) < LIMIT // CHUNK // 2  # killed part-way
    status = json.loads((out / ".work" / "tasks" / "task-00000-of-00002.json").read_text())
    assert status["state"] == "running"  # a stale heartbeat, not a completion marker
    for rank in (0, 1):
        run_task(out, rank, 2)
    merge(out)
    assert fingerprint(out) == fingerprint(single)


def test_a_merge_killed_part_way_and_rerun_gives_the_same_shards(
    project, engine, single, tmp_path, monkeypatch
):
    out = tmp_path / "out"
    build = Build.from_spec(spec(project), out)
    build.engine_instance = engine
    build.prepare()
    execute_task(build, 0, 1)

    import generator.merge as merging

    real = merging.write_shards

    def dies_after_one_shard(docs, folder, config):
        def some():
            for n, doc in enumerate(docs):
                if n == config.max_rows + 1:
                    raise KeyboardInterrupt  # the merge dies with one shard written
                yield doc

        return real(some(), folder, config)

    monkeypatch.setattr(merging, "write_shards", dies_after_one_shard)
    with pytest.raises(KeyboardInterrupt):
        merge(out)
    assert not (out / "manifest.json").exists() and (out / "shard-00000.arrow").exists()
    monkeypatch.setattr(merging, "write_shards", real)
    merge(out)
    assert fingerprint(out) == fingerprint(single)


def test_raising_a_threshold_reruns_only_the_merge(project, engine, single, tmp_path):
    """Scores and verdicts are checkpointed with their chunk: a stricter minimum asks the
    engine nothing and regenerates nothing."""
    out = tmp_path / "out"
    in_process(project, out, engine, 1)
    chunks = {p.name: p.stat().st_mtime_ns for p in (out / ".work" / "chunks").iterdir()}
    stricter = write(project / "strict.yaml", MIX.replace("quality: 0.5", "quality: 0.99"))

    class NoModel:
        name = "llamacpp"

        def __getattr__(self, attribute):
            raise AssertionError(f"the merge asked the engine for {attribute}")

    build = Build.from_spec(spec(project, mix=str(stricter)), out)
    build.engine_instance = engine
    build.prepare()
    build.engine_instance = NoModel()
    build.__dict__.pop("engine", None)
    manifest = merge_build(build, execution={})
    assert {p.name: p.stat().st_mtime_ns for p in (out / ".work" / "chunks").iterdir()} == chunks
    assert manifest["counts"]["generated"] == LIMIT
    assert (
        manifest["counts"]["kept"]
        <= json.loads((single / "manifest.json").read_text())["counts"]["kept"]
    )


def test_progress_moves_per_document_and_names_each_phase(project, engine, tmp_path):
    from generator.progress import Progress

    class Recorder(Progress):
        def __init__(self) -> None:
            self.events: list[tuple] = []

        def phase(self, name, total=None, done=0):
            self.events.append(("phase", name, total))

        def advance(self, items=1, tokens=0):
            self.events.append(("advance", items, tokens))

    recorder = Recorder()
    build = Build.from_spec(spec(project), tmp_path / "out", progress=recorder)
    build.engine_instance = engine
    run_build(build)
    phases = [e[1] for e in recorder.events if e[0] == "phase"]
    assert phases[0] == "generating" and "merging: writing shards" in phases
    second = next(k for k, e in enumerate(recorder.events) if e[0] == "phase" and k > 0)
    generating = recorder.events[1:second]
    documents = [e for e in generating if e[0] == "advance" and e[1] == 1]
    assert len(documents) == LIMIT and all(tokens > 0 for _, _, tokens in documents)


def test_one_reason_dropping_most_documents_is_a_loud_warning():
    from generator.build import misfire_warnings

    manifest = {
        "counts": {"generated": 10, "dropped": {"truncated": 10}},
        "config": {"sampling": {"max_tokens": 16}},
    }
    (warning,) = misfire_warnings(manifest)
    assert warning.startswith("warning: 10 of 10 documents (100%) were dropped as truncated")
    assert "raise max_tokens (now 16)" in warning
    manifest["counts"]["dropped"] = {"truncated": 4, "too-short": 1}
    assert misfire_warnings(manifest) == []
