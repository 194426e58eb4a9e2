"""Generation steps: idea -> document -> revise, each checkpointed, each a column.

Real generation on the bundled model with a tiny family that declares both steps,
so a build takes seconds; the built-in families declare the same steps.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pyarrow as pa
import pytest

from tests.helpers import write

FAMILY = """\
version: 1
system: memo.system.j2
template: memo.j2
steps:
  idea: memo.idea.j2
  revise: memo.revise.j2
axes:
  subject: [a pump station, a ferry timetable, a seed bank, a tide gauge]
"""
FILES = {
    "memo.system.j2": "You write short, plain workplace notes.",
    "memo.j2": "{% if idea %}Premise: {{ idea }}\n{% endif %}Write two sentences about "
    "{{ subject }}.",
    "memo.idea.j2": "In one sentence, say what went wrong with {{ subject }}.",
    "memo.revise.j2": "Premise: {{ idea }}\nDraft: {{ draft }}\nRewrite the draft more plainly.",
}
MIX = """\
name: stepped
documents: 100
seed: 5
families:
  memo: 1
sampling:
  temperature: 0.8
  max_tokens: 12
steps:
  idea: true
  revise: true
  idea_max_tokens: 16
filters:
  min_words: 1
  drop_truncated: false
scores: {}
judges: {}
"""
LIMIT = 4


@pytest.fixture(scope="module")
def project(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("steps")
    write(root / "templates" / "families" / "memo.yaml", FAMILY)
    for name, text in FILES.items():
        write(root / "templates" / "families" / name, text)
    write(root / "stepped.yaml", MIX)
    return root


def build(project: Path, out: Path, *extra: str) -> subprocess.Popen:
    args = ["build", "--mix", str(project / "stepped.yaml"), "--templates",
            str(project / "templates"), "--out", str(out), "--limit", str(LIMIT),
            "--chunk-size", "2", "--workers", "1", "-q", *extra]  # fmt: skip
    return subprocess.Popen(
        [sys.executable, "-m", "generator", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ},
    )


def rows(out: Path) -> list[dict]:
    found = []
    for path in sorted(out.glob("shard-*.arrow")):
        found += pa.ipc.open_stream(str(path)).read_all().to_pylist()
    return found


@pytest.fixture(scope="module")
def uninterrupted(project, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("whole") / "out"
    done = build(project, out)
    _, err = done.communicate(timeout=600)
    assert done.returncode == 0, err
    return out


def test_every_step_runs_and_is_kept_as_a_column(uninterrupted):
    kept = rows(uninterrupted)
    assert len(kept) == LIMIT
    assert all(r["idea"] and r["draft"] and r["text"] for r in kept)
    assert all(r["prompt"].startswith("Premise: ") for r in kept)  # the idea went in
    manifest = json.loads((uninterrupted / "manifest.json").read_text())
    assert manifest["config"]["steps"] == {"idea": True, "revise": True, "idea_max_tokens": 16}
    steps = uninterrupted / ".work" / "steps"
    assert sorted(p.name for p in steps.iterdir()) == ["draft", "idea"]


def test_a_build_killed_between_steps_resumes_to_the_same_result(project, uninterrupted, tmp_path):
    out = tmp_path / "out"
    running = build(project, out)
    drafts, chunks = out / ".work" / "steps" / "draft", out / ".work" / "chunks"
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and not any(drafts.glob("chunk-*.arrow")):
        time.sleep(0.01)
    running.send_signal(signal.SIGKILL)  # after the first drafts, before their revision
    running.wait()
    assert any(drafts.glob("chunk-*.arrow"))
    assert len(list(chunks.glob("chunk-*.arrow"))) < LIMIT // 2
    resumed = build(project, out)
    _, err = resumed.communicate(timeout=600)
    assert resumed.returncode == 0, err
    assert rows(out) == rows(uninterrupted)


def test_steps_can_be_switched_off_per_mix(project, tmp_path):
    plain = write(
        project / "plain.yaml",
        MIX.replace("  idea: true\n  revise: true", "  idea: false\n  revise: false"),
    )
    out = tmp_path / "out"
    done = subprocess.run(
        [sys.executable, "-m", "generator", "build", "--mix", str(plain), "--templates",
         str(project / "templates"), "--out", str(out), "--limit", "2", "-q"],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    kept = rows(out)
    assert kept and all(r["idea"] == "" and r["draft"] == "" for r in kept)
    assert all(r["prompt"] == "Write two sentences about " + json.loads(r["axes"])["subject"]
               + "." for r in kept)  # fmt: skip
