"""End-to-end builds with the real bundled model: shards, manifest, resume, locking."""

from __future__ import annotations

import hashlib
import itertools
import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import datasets
import pyarrow as pa

from generator.cli import main
from generator.engines import bundled_model_path
from generator.engines.llamacpp import LlamaCppEngine
from tests.conftest import LIMIT
from tests.helpers import build_args


def gen(*args: str, **kwargs) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "generator", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        **kwargs,
    )


def read_rows(out: Path) -> list[dict]:
    rows = []
    for path in sorted(out.glob("shard-*.arrow")):
        rows.extend(pa.ipc.open_stream(str(path)).read_all().to_pylist())
    return rows


def wait_for(condition, timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("timed out waiting for the build")
        time.sleep(0.05)


def test_progress_goes_to_stderr_and_summary_to_stdout(clean_build):
    _, out, done = clean_build
    assert "doc" in done.stderr and "tok/s" in done.stderr
    assert done.stdout.startswith(f"{out}: ")
    assert "documents kept" in done.stdout


def test_manifest_counts_add_up(clean_build):
    _, out, _ = clean_build
    manifest = json.loads((out / "manifest.json").read_text())
    counts = manifest["counts"]
    assert counts["planned"] == counts["generated"] == LIMIT
    assert counts["kept"] + sum(counts["dropped"].values()) == counts["generated"]
    stages = manifest["stages"]
    assert [s["stage"] for s in stages] == [
        "clean",
        "exact-dedup",
        "near-dedup",
        "score",
        "leakage",
    ]
    for before, after in itertools.pairwise(stages):
        assert before["out"] == after["in"]
    for stage in stages:
        assert stage["in"] == stage["out"] + sum(stage["dropped"].values())
    assert stages[-1]["out"] == counts["kept"]
    assert sum(manifest["documents_per_family"].values()) == counts["kept"]
    assert manifest["tokens"]["total"] == sum(manifest["tokens"]["per_family"].values())
    assert manifest["engine"] == "llamacpp"
    assert manifest["model"]["name"] == "SmolLM2-135M-Instruct.Q4_1.gguf"
    assert manifest["seed"] == 7 and manifest["config"]["documents"] == LIMIT
    assert manifest["mix"]["name"] == "tiny" and len(manifest["config_hash"]) == 64
    near = json.loads((out / manifest["near_duplicates"]["file"]).read_text())
    assert (
        len(near)
        == manifest["near_duplicates"]["count"]
        == counts["dropped"].get("near-duplicate", 0)
    )
    assert set(manifest["templates"]) == {
        "deployment-story",
        "technical-report",
        "high-stakes-choice",
    }
    assert all(ref.startswith(f"{name}@") for name, ref in manifest["templates"].items())


def test_shards_match_manifest_and_load_in_pyarrow_and_datasets(clean_build):
    _, out, _ = clean_build
    manifest = json.loads((out / "manifest.json").read_text())
    rows = read_rows(out)
    assert len(rows) == manifest["counts"]["kept"] > 0
    assert sorted(p.name for p in out.glob("shard-*.arrow")) == [
        s["path"] for s in manifest["shards"]
    ]
    for shard in manifest["shards"]:
        path = out / shard["path"]
        assert hashlib.sha256(path.read_bytes()).hexdigest() == shard["sha256"]
        assert datasets.Dataset.from_file(str(path)).num_rows == shard["rows"] <= 2
    loaded = datasets.load_dataset(
        "arrow", data_files=sorted(str(p) for p in out.glob("shard-*.arrow")), split="train"
    )
    assert loaded.num_rows == len(rows)
    assert sum(r["n_tokens"] for r in rows) == manifest["tokens"]["total"]
    family_counts = {
        f: sum(r["family"] == f for r in rows) for f in manifest["documents_per_family"]
    }
    assert family_counts == manifest["documents_per_family"]


def test_rows_record_engine_model_sampling_and_exact_token_counts(clean_build):
    _, out, _ = clean_build
    rows = read_rows(out)
    engine = LlamaCppEngine()
    assert [r["n_tokens"] for r in rows] == engine.count_tokens([r["text"] for r in rows])
    indices = [r["doc_index"] for r in rows]
    assert indices == sorted(indices)
    for row in rows:
        sampling = json.loads(row["sampling"])
        assert sampling["seed"] == row["seed"] and sampling["max_tokens"] == 24
        assert row["engine"] == "llamacpp" and row["model"] == engine.model.name
        assert row["id"] == hashlib.sha256(row["text"].encode()).hexdigest()[:32]
        assert row["template"].startswith(row["family"] + "@")
        assert json.loads(row["axes"])["ai_name"]


def test_rerunning_a_finished_build_does_nothing(clean_build, runner):
    mix, out, _ = clean_build
    before = {p.name: p.stat().st_mtime_ns for p in out.iterdir()}
    result = runner.invoke(main, build_args(mix, out, "--limit", str(LIMIT), "-q"))
    assert result.exit_code == 0, result.output
    assert "already complete" in result.output
    assert {p.name: p.stat().st_mtime_ns for p in out.iterdir()} == before


def test_a_folder_holding_another_configuration_is_refused(clean_build, runner):
    mix, out, _ = clean_build
    result = runner.invoke(main, build_args(mix, out, "--seed", "8", "-q"))
    assert result.exit_code == 1
    assert result.output.strip() == (
        f"Error: {out}: holds a build with a different mix, templates, seed, sampling or model; "
        "choose another --out or delete the folder"
    )


def test_sigkill_mid_build_then_resume_equals_the_uninterrupted_run(clean_build, tmp_path):
    mix, clean_out, _ = clean_build
    out = tmp_path / "resumed"
    args = build_args(mix, out, "--limit", str(LIMIT), "--chunk-size", "1", "-q")
    chunks = out / ".work" / "chunks"
    first = gen(*args)
    wait_for(lambda: chunks.is_dir() and len(list(chunks.glob("chunk-*.arrow"))) >= 2)
    first.send_signal(signal.SIGKILL)
    first.wait()
    survivors = {p.name: p.stat().st_mtime_ns for p in chunks.glob("chunk-*.arrow")}
    assert 2 <= len(survivors) < LIMIT
    assert not (out / "manifest.json").exists()
    assert not list(out.glob("shard-*.arrow"))

    second = gen(*args)
    _, stderr = second.communicate(timeout=300)
    assert second.returncode == 0, stderr
    # Work checkpointed before the kill was kept, not redone.
    for name, mtime in survivors.items():
        assert (chunks / name).stat().st_mtime_ns == mtime
    assert read_rows(out) == read_rows(clean_out)
    resumed = json.loads((out / "manifest.json").read_text())
    clean = json.loads((clean_out / "manifest.json").read_text())
    assert resumed["counts"] == clean["counts"] and resumed["config_hash"] == clean["config_hash"]
    assert [s["sha256"] for s in resumed["shards"]] == [s["sha256"] for s in clean["shards"]]


def test_a_second_build_into_a_running_builds_folder_refuses(tiny_mix, tmp_path, runner):
    out = tmp_path / "busy"
    running = gen(*build_args(tiny_mix, out, "--limit", "40", "--chunk-size", "1", "-q"))
    try:
        lock = out / ".work" / "lock"
        wait_for(lambda: lock.exists() and lock.read_text().strip() == str(running.pid))
        result = runner.invoke(main, build_args(tiny_mix, out, "--limit", "40", "-q"))
        assert result.exit_code == 1
        assert result.output.strip() == (
            f"Error: {out}: another build is writing to this folder (pid {running.pid}); "
            "wait for it or choose another --out"
        )
    finally:
        running.send_signal(signal.SIGKILL)
        running.wait()


def test_raising_the_limit_generates_only_the_new_documents(tiny_mix, tmp_path, runner):
    out = tmp_path / "grow"
    base = build_args(tiny_mix, out, "-q")
    assert runner.invoke(main, [*base, "--limit", "2"]).exit_code == 0
    chunks = out / ".work" / "chunks"
    before = {p.name: p.stat().st_mtime_ns for p in chunks.iterdir()}
    orphan = chunks / ".chunk-000000002-000000003.arrow.tmp-99999"  # left by a killed build
    orphan.write_bytes(b"half a chunk")
    result = runner.invoke(main, [*base, "--limit", "3"])
    assert not orphan.exists()
    assert result.exit_code == 0, result.output
    after = {p.name: p.stat().st_mtime_ns for p in chunks.iterdir()}
    assert {k: v for k, v in after.items() if k in before} == before
    assert sorted(set(after) - set(before)) == ["chunk-000000002-000000003.arrow"]
    assert json.loads((out / "manifest.json").read_text())["counts"]["generated"] == 3


def test_manifest_names_the_model_without_its_local_path(clean_build):
    _, out, _ = clean_build
    text = (out / "manifest.json").read_text()
    assert str(bundled_model_path()) not in text
    assert "site-packages" not in text
