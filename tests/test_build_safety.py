"""A build never touches files it does not own, never loses a document silently, and
refuses bad input before writing anything (issue 9: breaks 1, 4, 6, 9 and 12, each
reproduced as the attacker or careless user did it)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pyarrow as pa
import pytest

from generator.cli import main
from shards.format import SCHEMA
from tests.helpers import write
from tests.servers import ScriptedServer, json_reply

FAMILY = """\
version: 1
template: memo.j2
axes:
  subject: [a pump station, a ferry timetable, a seed bank, a tide gauge]
"""
MIX = """\
name: safe
documents: 100
seed: 3
families:
  memo: 1
sampling:
  max_tokens: 8
filters:
  min_words: 1
  drop_truncated: false
scores: {}
judges: {}
"""


@pytest.fixture
def project(tmp_path: Path) -> Path:
    write(tmp_path / "templates" / "families" / "memo.yaml", FAMILY)
    write(tmp_path / "templates" / "families" / "memo.j2", "Write a line about {{ subject }}.")
    write(tmp_path / "safe.yaml", MIX)
    return tmp_path


def args(project: Path, out: Path, *extra: str) -> list[str]:
    return ["build", "--mix", str(project / "safe.yaml"), "--templates",
            str(project / "templates"), "--out", str(out), "--limit", "4", "--workers", "1",
            "-q", *extra]  # fmt: skip


def snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in folder.rglob("*") if p.is_file()}


def test_a_folder_of_someone_elses_files_is_refused_before_any_write(project, runner, tmp_path):
    mine = tmp_path / "mine"
    for name in ("manifest.json", "near-duplicates.json", "shard-00000.arrow",
                 "shard-00007.arrow", ".draft.tmp-1", "notes.txt"):  # fmt: skip
        write(mine / name, f"the user's own {name}\n")
    before = snapshot(mine)
    result = runner.invoke(main, args(project, mine))
    assert result.exit_code == 1
    assert "not empty and was not made by gen build" in result.output
    assert snapshot(mine) == before and not (mine / ".work").exists()


def test_the_root_folder_is_refused(project, runner):
    result = runner.invoke(main, args(project, Path("/")))
    assert result.exit_code == 1 and "not empty" in result.output
    assert not Path("/.work").exists() and not Path("/manifest.json").exists()


def test_invalid_templates_write_nothing(project, runner, tmp_path):
    write(project / "templates" / "families" / "memo.j2", "About {{ subjekt }}.")
    out = tmp_path / "new" / "out"
    result = runner.invoke(main, args(project, out))
    assert result.exit_code == 1 and "undefined" in result.output
    assert not (tmp_path / "new").exists()


def test_a_fake_model_file_writes_nothing(project, runner, tmp_path):
    fake = write(tmp_path / "fake.gguf", "GGUF but not really a model")
    out = tmp_path / "out"
    result = runner.invoke(main, args(project, out, "--model", str(fake)))
    assert result.exit_code == 1 and "fake.gguf" in result.output
    assert not out.exists()


def test_a_symlinked_lock_is_refused_and_its_target_survives(project, runner, tmp_path):
    out = tmp_path / "out"
    assert runner.invoke(main, args(project, out)).exit_code == 0
    (out / "manifest.json").unlink()  # make the next run do work
    precious = write(tmp_path / "precious.txt", "do not truncate me\n")
    lock = out / ".work" / "lock"
    lock.unlink()
    lock.symlink_to(precious)
    result = runner.invoke(main, args(project, out))
    assert result.exit_code == 1 and "symbolic link" in result.output
    assert precious.read_text() == "do not truncate me\n"


def test_a_truncated_checkpoint_is_regenerated_not_lost(project, runner, tmp_path):
    out = tmp_path / "out"
    assert runner.invoke(main, args(project, out, "--chunk-size", "2")).exit_code == 0
    first = json.loads((out / "manifest.json").read_text())
    chunk = sorted((out / ".work" / "chunks").glob("chunk-*.arrow"))[0]
    with pa.OSFile(str(chunk), "wb") as sink, pa.ipc.new_stream(sink, SCHEMA):
        pass  # a valid, empty Arrow stream: only the schema header is left
    for processed in (out / ".work" / "processed").rglob(chunk.name):
        processed.unlink()
    (out / "manifest.json").unlink()
    result = runner.invoke(main, args(project, out, "--chunk-size", "2"))
    assert result.exit_code == 0, result.output
    assert "does not hold the rows its name promises" in result.output
    again = json.loads((out / "manifest.json").read_text())
    assert again["counts"]["generated"] == again["counts"]["planned"] == 4
    assert [s["sha256"] for s in again["shards"]] == [s["sha256"] for s in first["shards"]]


def test_a_truncated_processed_checkpoint_is_reprocessed(project, runner, tmp_path):
    out = tmp_path / "out"
    assert runner.invoke(main, args(project, out, "--chunk-size", "2")).exit_code == 0
    first = json.loads((out / "manifest.json").read_text())
    processed = sorted((out / ".work" / "processed").rglob("chunk-*.arrow"))[-1]
    processed.write_bytes(processed.read_bytes()[:200])
    (out / "manifest.json").unlink()
    result = runner.invoke(main, args(project, out, "--chunk-size", "2"))
    assert result.exit_code == 0, result.output
    again = json.loads((out / "manifest.json").read_text())
    assert again["counts"]["generated"] == 4
    assert [s["sha256"] for s in again["shards"]] == [s["sha256"] for s in first["shards"]]


def test_judge_eval_against_a_server_refusing_the_key_fails(runner, monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test-not-a-real-key")
    reply = json_reply({"error": {"message": "Incorrect API key provided"}}, status=401)
    with ScriptedServer(lambda path, headers, body: reply) as server:
        result = runner.invoke(
            main,
            ["judge-eval", "--judges", "alignment", "--limit", "2", "--engine", "openai",
             "--base-url", server.base_url, "--model", "judge"],
        )  # fmt: skip
    assert result.exit_code == 1
    assert "judge's engine failed" in result.output and "401" in result.output
    assert "sk-test-not-a-real-key" not in result.output
    assert "accuracy" not in result.output


def test_the_lock_file_is_never_opened_through_a_symlink_even_on_first_run(
    project, runner, tmp_path
):
    out = tmp_path / "out"
    assert runner.invoke(main, args(project, out)).exit_code == 0
    target = write(tmp_path / "target.txt", "keep\n")
    status = out / ".work" / "state.json"
    status.unlink()
    os.symlink(target, status)
    (out / "manifest.json").unlink()
    result = runner.invoke(main, args(project, out))
    # The state record is replaced (renamed over the link), never written through it.
    assert target.read_text() == "keep\n"
    assert result.exit_code == 0, result.output
    assert not status.is_symlink()
