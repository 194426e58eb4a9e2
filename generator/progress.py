"""How a build reports progress: a small interface the CLI draws from (a leaf module, so
the command line can import it without loading the build's dependencies)."""

from __future__ import annotations

import sys


class Progress:
    """Receives a build's progress; silent by default. The CLI draws bars and lines from it.

    Every phase is announced, and generation advances per document where the
    engine reports per document, so the screen is never quiet for long.
    """

    def phase(self, name: str, total: int | None = None, done: int = 0) -> None:
        """A new phase begins (`loading model`, `generating`, `validating judges`,
        `merging`...), with `total` items of which `done` are already done."""

    def advance(self, items: int = 1, tokens: int = 0) -> None:
        """`items` more of the current phase are done, with `tokens` generated tokens."""

    def note(self, message: str) -> None:
        """Something the user should read (a warning or a hint)."""

    def close(self) -> None:
        """The build ended, normally or not."""


class PrintNotes(Progress):
    """The quiet default: nothing but notes, on stderr."""

    def note(self, message: str) -> None:
        print(message, file=sys.stderr)
