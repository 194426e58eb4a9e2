"""Shared fixtures: a small real mix, the template library, a CLI runner."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from generator.prompts import TemplateLibrary
from tests.helpers import TINY_MIX, build_args, write

LIMIT = 6

pytest_plugins = ["tests.clusters"]


@pytest.fixture(scope="session", autouse=True)
def private_cache(tmp_path_factory) -> Path:
    """Judge validations are cached per user across builds; the tests get their own cache
    (in the environment, so builds in subprocesses use it too)."""
    import os

    cache = tmp_path_factory.mktemp("user-cache")
    os.environ["GEN_CACHE_DIR"] = str(cache)
    return cache


@pytest.fixture
def tiny_mix(tmp_path: Path) -> Path:
    return write(tmp_path / "tiny.yaml", TINY_MIX.format(max_tokens=24, max_rows=2))


@pytest.fixture
def library() -> TemplateLibrary:
    return TemplateLibrary()


@pytest.fixture
def runner() -> CliRunner:
    return CliRunner()


@pytest.fixture(scope="session")
def clean_build(tmp_path_factory) -> tuple[Path, Path, subprocess.CompletedProcess]:
    """One uninterrupted real build (bundled model) that tests compare against and read.
    Read-only for everyone: the inspect tests check nothing writes into it."""
    root = tmp_path_factory.mktemp("clean")
    mix = root / "tiny.yaml"
    mix.write_text(TINY_MIX.format(max_tokens=24, max_rows=2))
    out = root / "out"
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "generator",
            *build_args(mix, out, "--limit", str(LIMIT), "--chunk-size", "2"),
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return mix, out, done
