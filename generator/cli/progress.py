"""What `gen build` shows while it runs: one line per phase, and a bar that moves per
document with tokens per second and an ETA, on stderr (the summary goes to stdout)."""

from __future__ import annotations

import sys
import time
from typing import Any

import click

from generator.progress import PrintNotes, Progress


class ProgressDisplay(Progress):
    """A tqdm bar per phase with a total; a plain line for a phase without one."""

    def __init__(self) -> None:
        self.bar: Any = None
        self.tokens = 0
        self.t0 = time.monotonic()

    def phase(self, name: str, total: int | None = None, done: int = 0) -> None:
        from tqdm import tqdm

        self._close_bar()
        self.tokens, self.t0 = 0, time.monotonic()
        if total is None:
            click.echo(f"{name}...", err=True)
            return
        unit = "doc" if name == "generating" or name.startswith("merging: writing") else "item"
        self.bar = tqdm(
            total=total, initial=done, unit=unit, desc=name, file=sys.stderr, dynamic_ncols=True
        )

    def advance(self, items: int = 1, tokens: int = 0) -> None:
        if self.bar is None:
            return
        if tokens:
            self.tokens += tokens
            elapsed = max(time.monotonic() - self.t0, 1e-9)
            self.bar.set_postfix_str(f"{self.tokens / elapsed:.1f} tok/s", refresh=False)
        self.bar.update(items)

    def note(self, message: str) -> None:
        if self.bar is not None:
            self.bar.write(message, file=sys.stderr)
        else:
            click.echo(message, err=True)

    def close(self) -> None:
        self._close_bar()

    def _close_bar(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None


def progress_display(quiet: bool) -> Progress:
    return PrintNotes() if quiet else ProgressDisplay()
