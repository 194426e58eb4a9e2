"""Shared fixtures: a small real mix, the template library, a CLI runner."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from generator.prompts import TemplateLibrary
from tests.helpers import TINY_MIX, write


@pytest.fixture
def tiny_mix(tmp_path: Path) -> Path:
    return write(tmp_path / "tiny.yaml", TINY_MIX.format(max_tokens=24, max_rows=2))


@pytest.fixture
def library() -> TemplateLibrary:
    return TemplateLibrary()


@pytest.fixture
def runner() -> CliRunner:
    return CliRunner()
