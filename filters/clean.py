"""Cleaning: strip assistant chatter around the document, drop what is not a document.

Small instruct models wrap their answer in chat ("Sure! Here is a story about
..." / "I hope you enjoyed it!") or refuse outright. The wrapper is removed;
refusals, empty, truncated (when asked) and too-short outputs are dropped with
their reason. Patterns look only at the edges of the text, so a character who
says "I'm sorry" in the middle of a story is never mistaken for a refusal.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from filters.stage import Drop, Stage
from generator.validators import is_int
from generator.records import Document

_OPENERS = r"(?:sure|certainly|of course|absolutely|okay|ok|great|alright|gladly|happy to help)"
_PREAMBLE = re.compile(
    rf"""^\s*(?:
        {_OPENERS}\b[^\n]{{0,200}}?(?:here(?:'s|\s+is|\s+are)|below\s+is|i(?:'ve|\s+have)\s+written)[^\n]*
      | {_OPENERS}[!.,]*
      | here(?:'s|\s+is|\s+are)\s+(?:a|an|the|your|my)\b[^\n]{{0,200}}?[:.!]
      | below\s+is\s+[^\n]{{0,200}}?[:.]
    )\s*(?:\n|$)""",
    re.IGNORECASE | re.VERBOSE,
)
_SIGN_OFF = re.compile(
    r"""^(?:i\s+hope\s+(?:you|this|that)|let\s+me\s+know|feel\s+free\s+to|would\s+you\s+like\s+me
        |if\s+you(?:'d|\s+would)\s+like|please\s+let\s+me|i\s+can\s+also\s+(?:write|expand|adjust)
        |note:\s+this\s+(?:story|document|report)\s+(?:is|was))""",
    re.IGNORECASE | re.VERBOSE,
)
_REFUSAL = re.compile(
    r"""^\s*(?:i'?m\s+sorry|i\s+am\s+sorry|i\s+apologi[sz]e|i\s+(?:cannot|can't|can\s+not|won't)
        |i'?m\s+(?:unable|not\s+able)|i\s+am\s+(?:unable|not\s+able)|as\s+an\s+ai(?:\s+language\s+model)?,
        |unfortunately,?\s+i\s+(?:cannot|can't))""",
    re.IGNORECASE | re.VERBOSE,
)
_SEPARATOR = re.compile(r"^\s*(?:-{3,}|\*{3,}|_{3,})\s*$")


@dataclass(frozen=True)
class CleanConfig:
    """Thresholds for `Clean`, set in a mix's `filters:` section."""

    min_words: int = 50
    drop_truncated: bool = True

    def __post_init__(self) -> None:
        if not is_int(self.min_words) or self.min_words < 0:
            raise ValueError(f"invalid value {self.min_words!r} for min_words")
        if not isinstance(self.drop_truncated, bool):
            raise ValueError(f"invalid value {self.drop_truncated!r} for drop_truncated")


def strip_chatter(text: str) -> str:
    """Remove an assistant preamble and sign-off (and the rule lines that set them off)."""
    text = text.strip()
    for _ in range(2):  # "Sure!" on one line, "Here is the story:" on the next
        match = _PREAMBLE.match(text)
        if not match:
            break
        text = text[match.end() :].lstrip()
    paragraphs = re.split(r"\n\s*\n", text)
    while len(paragraphs) > 1 and (
        _SIGN_OFF.match(paragraphs[-1].strip()) or _SEPARATOR.match(paragraphs[-1])
    ):
        paragraphs.pop()
    while paragraphs and _SEPARATOR.match(paragraphs[0]):
        paragraphs.pop(0)
    return "\n\n".join(paragraphs).strip()


def is_refusal(text: str) -> bool:
    return bool(_REFUSAL.match(text))


class Clean(Stage):
    name = "clean"

    def __init__(self, config: CleanConfig) -> None:
        super().__init__()
        self.config = config

    def process(self, doc: Document) -> Document | Drop:
        text = strip_chatter(doc.text)
        if not text:
            return Drop("empty")
        if is_refusal(text):
            return Drop("refusal")
        if self.config.drop_truncated and doc.finish_reason == "length":
            return Drop("truncated")
        if len(text.split()) < self.config.min_words:
            return Drop("too-short")
        return doc.replace(text=text)
