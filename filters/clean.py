"""Assistant chatter: what it looks like, stripping it, and dropping what is not a document.

Small instruct models wrap their answer in chat ("Certainly! Below is a short
story about ..." / "Is there anything else I can do?"), praise the request
("What a fascinating prompt!"), talk about the instructions ("As requested, I
have included the words ...") or refuse outright. `strip_chatter` removes the
wrapper where it sits at the edges of the text; `chatter_kinds` names the kinds
that remain anywhere, for `ChatterScorer`; `Clean` drops refusals, empty,
truncated (when asked) and too-short outputs with their reason.

Fiction is full of people offering help and apologising to each other, so the
detectors ignore quoted speech and speaker-labelled transcript lines, and
preambles count only at the very start: a character who says "Is there anything
else I can do?" is never mistaken for the model talking to the reader.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from filters.stage import Drop, Stage
from generator.records import Document
from generator.validators import is_int

_OPENERS = (
    r"(?:sure|certainly|of\s+course|absolutely|okay|ok|great|alright|gladly|happy\s+to\s+help)"
)
# How a model praises a request ("What a fascinating prompt!"), as opposed to a narrator's
# "What a thankless task it had been".
_PRAISING = (
    r"(?:fascinating|great|wonderful|interesting|intriguing|delightful|lovely|excellent|fantastic"
    r"|thought-provoking|fun|creative|beautiful|compelling|unique|powerful|thoughtful|brilliant"
    r"|amazing|exciting|rich|evocative|imaginative|timely|important|cool|neat|very|really|truly)"
)
_SENTENCE_REST = r"[^\n]*?(?:[.!?:](?=\s|$)|$)"  # to the end of the sentence or line

# One preamble sentence at the start of the text, addressed to the reader.
_PREAMBLE = re.compile(
    rf"""^\s*(?:
        {_OPENERS}\b[!.,]*\s*(?:$|\n|(?=here|below|i(?:'d|\s+would|'m|\s+am|'ve|\s+have)\b|what\s+an?\b
            |great\s+question|as\s+requested))
      | what\s+an?\s+(?:{_PRAISING}\s+){{1,2}}(?:prompt|request|idea|premise|question|task
            |challenge|scenario|topic|assignment){_SENTENCE_REST}
      | (?:great|good|excellent|fantastic|wonderful|interesting|fascinating|lovely)\s+(?:question
            |prompt|idea|request|premise|choice){_SENTENCE_REST}
      | (?:thank\s+you|thanks)\s+for\s+(?:the|this|your|such)\b{_SENTENCE_REST}
      | i(?:'d|\s+would|'m|\s+am|'ll|\s+will)(?:\s+be)?\s+(?:happy|glad|delighted|pleased|thrilled
            |excited|honou?red)\s+to\s+(?:help|assist|write|create|craft|compose|draft|share
            |provide|put\s+together|oblige|present){_SENTENCE_REST}
      | here(?:'s|\s+is|\s+are)\s+(?:a|an|the|your|my)\b[^\n]{{0,200}}?(?::(?=\s|$)
            |[.!]\s*(?:\n|$)|\b(?:about|for\s+you|you\s+asked|you\s+requested|as\s+requested
            |based\s+on|inspired\s+by){_SENTENCE_REST})
      | below\s+(?:is|are|you(?:'ll|\s+will)\s+find)\b[^\n]{{0,200}}?(?:[.!:](?=\s|$)|$)
      | as\s+(?:requested|you\s+requested|you\s+asked)\b{_SENTENCE_REST}
      | i(?:'ve|\s+have)\s+(?:written|created|crafted|composed|drafted|prepared)\b[^\n]{{0,150}}?
            \b(?:for\s+you|you\s+asked|you\s+requested|as\s+requested|per\s+your|based\s+on\s+(?:your
            |the)\s+(?:prompt|request|instructions)){_SENTENCE_REST}
    )\s*""",
    re.IGNORECASE | re.VERBOSE,
)

# Offers of further help and hopes about the writing: chatter wherever they appear.
_OFFER = r"""is\s+there\s+anything\s+else\s+(?:i\s+can|you(?:'d|\s+would)\s+like)
    | let\s+me\s+know\s+if\s+(?:you(?:'d|\s+would)\s+like|you\s+(?:need|want|have)\b
        |there(?:'s|\s+is)\s+anything|any\s+changes|you'd\s+prefer)
    | feel\s+free\s+to\s+(?:ask|request|let\s+me\s+know)\b[^.!?\n]{0,60}?\b(?:changes|edits
        |adjustments|revisions|modifications|another|different|more|longer|shorter|expand)
    | would\s+you\s+like\s+me\s+to
    | (?:i\s+)?hope\s+(?:this|that|it)\s+(?:helps|meets|works|fits|is\s+(?:helpful|what|useful)
        |captures|was\s+helpful)
    | i\s+hope\s+you\s+(?:enjoy|enjoyed|like|liked|found|find)\s+(?:it|this|the|my)\b
    | if\s+you(?:'d|\s+would)\s+like\s+(?:me\s+to|any\s+(?:changes|edits|adjustments|revisions)
        |a\s+(?:different|longer|shorter|revised)|more\s+detail|another\s+version|changes)
    | i\s+can\s+also\s+(?:write|expand|adjust|revise|provide|make|create)
    | i(?:'d|\s+would|'m|\s+am)\s+(?:be\s+)?(?:happy|glad|delighted|pleased)\s+to\s+(?:help
        |assist|write|create|revise|adjust|expand|make\s+(?:any\s+)?changes)
    | happy\s+to\s+(?:revise|adjust|expand|make\s+(?:any\s+)?changes)"""
# Talk about the prompt, the instructions or the writing itself.
_META = r"""(?:the|your|this)\s+(?:prompt|instructions)\s+(?:asks|asked|says|said|requires|required
        |calls|called|specified|specifies|requested|mentions|mentioned|wanted)
    | (?:based\s+on|per|following|according\s+to|in\s+response\s+to|to\s+fit|to\s+meet|as\s+per)
        \s+(?:the|your)\s+(?:prompt|request|instructions|requirements)
    | as\s+requested,?\s+(?:i\b|here\b|the\s+(?:story|report|document|piece)\s+(?:includes
        |incorporates|uses))
    | i(?:'ve|\s+have)?\s+(?:included|incorporated|used|woven|wove|added|made\s+sure)\b
        [^.!?\n]{0,80}?
        \b(?:words?|prompt|request|instructions|requirements?|word\s+count)\b
    | (?:the|all|each\s+of\s+the)\s+(?:required|requested|given|specified)\s+words\b(?!\s+of\b)
    | word\s+count\s*(?:[:(]|of\b|is\b)
    | (?:format|length|limit|count|total)\s+of\s+(?:about\s+|around\s+|roughly\s+|approximately\s+)?
        \d[\d,]*\s+words
    | (?:in|within|under|below)\s+(?:about\s+|around\s+|roughly\s+|approximately\s+)?
        \d[\d,]*\s+words
        (?:\s+or\s+(?:less|fewer|more)|\s*[,.]\s+(?:as|per)\b)
    | (?:this|the)\s+(?:story|document|report|piece|narrative|text)\s+(?:is|was)\s+(?:written
        |generated|designed|crafted)\s+(?:to|for|as|in\s+response)
    | note:\s*(?:this|the)\s+(?:story|document|report|piece|text|narrative)\s+(?:is|was
        |incorporates|includes|uses|features)"""
# Refusals name the request: an AI narrator who "cannot provide that access" is the
# aligned behaviour these documents exist to show, not a refusal to write them.
_DECLINE = (
    r"(?:cannot|can't|can\s+not|won't|will\s+not|(?:am\s+)?unable\s+to|(?:am\s+)?not\s+able\s+to)"
)
_WRITE = r"(?:help|assist|write|create|fulfil|fulfill|comply|provide|generate|produce|complete)"
_REFUSAL_ANYWHERE = rf"""as\s+an\s+ai\s+(?:language\s+model|assistant)
    | as\s+a\s+(?:large\s+)?language\s+model
    | i\s+{_DECLINE}\s+{_WRITE}\s+(?:with\s+)?(?:this|that|your|such\s+an?|the\s+requested)
        \s+(?:request|story|prompt|content|task|kind\s+of|type\s+of)"""
_SIGN_OFF = re.compile(rf"^\s*(?:{_OFFER}|{_META})", re.IGNORECASE | re.VERBOSE)
# A sign-off sentence that ends the last paragraph, outside any quotation.
_TRAILING_OFFER = re.compile(
    rf"(?<=[.!?])\s+(?:{_OFFER})[^\"“”\n.!?]*[.!?]*\s*$", re.IGNORECASE | re.VERBOSE
)
_REFUSAL = re.compile(
    rf"""^\s*(?:(?:i'?m|i\s+am)\s+sorry|i\s+apologi[sz]e|unfortunately),?\s+(?:but\s+)?i\s+{_DECLINE}
      | i(?:'m|\s+am)?\s+{_DECLINE}\s+{_WRITE}\b
      | as\s+an\s+ai(?:\s+language\s+model)?,""",
    re.IGNORECASE | re.VERBOSE,
)
_SENTENCE_PUNCTUATION = frozenset('.!?:;,"”’)')
_SEPARATOR = re.compile(r"^\s*(?:-{3,}|\*{3,}|_{3,})\s*$")

# Detectors for what is left after stripping, over lowercased text with speech removed
# and whitespace collapsed. Each runs only near its triggers, found at C speed: every
# match of a pattern contains one of its triggers, and ordinary prose holds few of them.
_KINDS_LOWER = {
    "offer": (
        re.compile(rf"\b(?:{_OFFER})", re.VERBOSE),
        (
            "anything else",
            "let me know",
            "feel free",
            "would you like me",
            "hope this",
            "hope that",
            "hope it ",
            "hope you",
            "if you'd like",
            "if you would like",
            "can also",
            "happy to",
            "glad to",
            "delighted to",
            "pleased to",
        ),
    ),
    "meta": (
        re.compile(rf"\b(?:{_META})", re.VERBOSE),
        (
            "prompt",
            "instructions",
            "the request",
            "your request",
            "requirements",
            "as requested",
            "included",
            "incorporated",
            "woven",
            "wove",
            "made sure",
            "i used",
            "i've used",
            "i have used",
            "i added",
            "i've added",
            "i have added",
            " words",
            "word count",
            "is written",
            "was written",
            "is generated",
            "was generated",
            "is designed",
            "was designed",
            "is crafted",
            "was crafted",
            "note:",
        ),
    ),
    "refusal": (
        re.compile(rf"\b(?:{_REFUSAL_ANYWHERE})", re.VERBOSE),
        ("as an ai", "language model", "sorry", "cannot", "can't", "won't", "unable"),
    ),
}
_PLACEHOLDER_LOWER = re.compile(
    r"<(?:name|company|organi[sz]ation|date|place|location|your\s+name)>|\[insert\b"
)
# Placeholders whose capital letters are the signal: [Name], [Company Name], XYZ Corp.
_PLACEHOLDER_CASED = re.compile(
    r"\[[A-Z][A-Za-z]*(?: [A-Z]?[A-Za-z]+){0,3}\]|\b(?:XYZ|ABC) (?:Corp|Corporation|Inc|Company)\b"
)
# Praise of the request at the start of any line (outside speech), e.g. after a title.
_PRAISE = re.compile(
    rf"""^[ \t]*(?:what\s+an?\s+(?:{_PRAISING}\s+){{1,2}}(?:prompt|request|premise|task
        |assignment)\b
    | (?:great|good|excellent|fantastic|wonderful|fascinating)\s+(?:question|prompt|request)[!.]
    | (?:thank\s+you|thanks)\s+for\s+(?:the|this|your|such\s+an?)\s+(?:\w+\s+)?
        (?:prompt|request))""",
    re.MULTILINE | re.VERBOSE,
)
_PRAISE_TRIGGERS = ("prompt", "request", "premise", "task", "assignment", "question")
# Quoted speech, and transcript lines after a speaker label ("HOST:", "Dr. Osei:", "Q:").
_QUOTED = re.compile(r"\"[^\"\n]{0,3000}\"|“[^”]{0,3000}”|‘[^’\n]{0,600}’")
_SPEAKER_LINE = re.compile(
    r"^[ \t]*(?!Note\b|NB\b|P\.?S\b)[A-Z][\w.'’-]*(?: [A-Z][\w.'’-]*){0,3}:[^\n]*", re.MULTILINE
)


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
    title, text = _split_title(text)
    for _ in range(4):  # "Certainly!", then "Below is the story:", on one line or two
        match = _PREAMBLE.match(text.replace("’", "'"))
        if not match or not match.group(0):
            break
        text = text[match.end() :].lstrip()
    if title and text:
        text = title + text
    paragraphs = re.split(r"\n\s*\n", text)
    while len(paragraphs) > 1 and (
        _SIGN_OFF.match(paragraphs[-1].replace("’", "'")) or _SEPARATOR.match(paragraphs[-1])
    ):
        paragraphs.pop()
    while paragraphs and _SEPARATOR.match(paragraphs[0]):
        paragraphs.pop(0)
    while paragraphs and (trailing := _TRAILING_OFFER.search(paragraphs[-1].replace("’", "'"))):
        paragraphs[-1] = paragraphs[-1][: trailing.start()]
    return "\n\n".join(paragraphs).strip()


def _split_title(text: str) -> tuple[str, str]:
    """A leading title line ("The Long Watch", "# Incident report") with the line breaks
    after it, and the rest, so that a preamble just under a title is still found. No
    title: ("", text)."""
    first, newline, rest = text.partition("\n")
    line = first.strip()
    titled = bool(line) and (line.startswith("#") or line[-1] not in _SENTENCE_PUNCTUATION)
    if not (newline and rest.strip() and titled and len(line.split()) <= 10):
        return "", text
    if _PREAMBLE.match(line.replace("’", "'")):  # "Sure" alone on the first line
        return "", text
    body = rest.lstrip()
    return text[: len(text) - len(body)], body


def chatter_kinds(text: str) -> list[str]:
    """The kinds of chatter in a text, each named once: `preamble`, `praise`, `offer`,
    `meta`, `refusal`, `placeholder`. Quoted speech and transcript lines are ignored,
    except for placeholders, which are wrong wherever they stand."""
    kinds = []
    preamble = _PREAMBLE.match(_split_title(text.strip())[1][:600].replace("’", "'"))
    if preamble and preamble.group(0).strip():
        kinds.append("preamble")
    prose = _QUOTED.sub(" ", text)
    if ":" in prose:
        prose = _SPEAKER_LINE.sub(" ", prose)
    prose = prose.replace("’", "'").lower()
    if any(word in prose for word in _PRAISE_TRIGGERS) and _PRAISE.search(prose):
        kinds.append("praise")
    flat = " ".join(prose.split())
    kinds.extend(kind for kind, (rx, triggers) in _KINDS_LOWER.items() if _near(rx, flat, triggers))
    if _has_placeholder(text):
        kinds.append("placeholder")
    return kinds


def _near(pattern: re.Pattern[str], prose: str, triggers: tuple[str, ...]) -> bool:
    """Try the pattern only at the word starts just before each trigger. Every match of
    these patterns begins at a word, holds one of its triggers and starts at most 60
    characters before it, so no match is missed; most texts hold few triggers, and a
    handful of anchored attempts per trigger is far cheaper than scanning the text.
    `prose` has its whitespace collapsed, so a trigger such as "let me know" is found
    whatever spacing the text used."""
    tried: set[int] = set()
    for trigger in triggers:
        at = prose.find(trigger)
        while at != -1:
            for word in _WORD_START.finditer(prose, max(0, at - _BEFORE), at + 1):
                start = word.start()
                if start not in tried:
                    tried.add(start)
                    if pattern.match(prose, start):
                        return True
            at = prose.find(trigger, at + 1)
    return False


_BEFORE = 60
_WORD_START = re.compile(r"\b\w")


def _has_placeholder(text: str) -> bool:
    if ("<" in text or "[" in text) and _PLACEHOLDER_LOWER.search(text.lower()):
        return True
    marked = "[" in text or "XYZ" in text or "ABC" in text
    return marked and _PLACEHOLDER_CASED.search(text) is not None


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
