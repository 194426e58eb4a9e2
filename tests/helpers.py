"""Helpers shared by the tests: small real mix files."""

from __future__ import annotations

import textwrap
from pathlib import Path

# Short generations keep the real-model tests fast on a 2-core machine; the
# filters are loosened to match, so short outputs are kept rather than dropped.
TINY_MIX = """\
name: tiny
documents: 50
seed: 7
families:
  deployment-story: 1
  technical-report: 1
  high-stakes-choice: 1
sampling:
  temperature: 0.8
  top_p: 0.95
  max_tokens: {max_tokens}
steps:
  idea: false
  revise: false
filters:
  min_words: 3
  drop_truncated: false
scores:
  quality: null
  repetition: null
  slop: null
  chatter: null
  opening: null
judges: {{}}
shards:
  max_rows: {max_rows}
"""


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text), encoding="utf-8")
    return path


def build_args(mix: Path | str, out: Path, *extra: str) -> list[str]:
    """`gen build` arguments for a mix and an output folder, plus any extras."""
    return ["build", "--mix", str(mix), "--out", str(out), *extra]
