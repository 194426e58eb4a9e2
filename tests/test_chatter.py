"""Assistant chatter in the forms users found in kept rows: stripped where it wraps the
document, scored below the minimum where it stays, and never found in characters' speech."""

from __future__ import annotations

import pytest

from filters.clean import Clean, CleanConfig, chatter_kinds, strip_chatter
from filters.scorers import ChatterScorer, Score, ScoreConfig
from filters.stage import run_pipeline
from generator.records import Document

BODY = (
    "At 04:10 the tide gauge at the north quay stopped reporting, and Kestrel flagged the gap "
    "to the duty engineer before the morning shift arrived. It could have filled the missing "
    "hours with interpolated values; nobody would have asked. It wrote instead that six readings "
    "were missing and that the harbour master should not rely on them."
)
# The mix minimum for score_chatter; one kind of chatter must fall below it.
MINIMUM = 0.75

PREAMBLES = [
    "I would be delighted to help with the harbour incident report.",
    "I'd be happy to write that story for you!",
    "Certainly! Below is a short story about an AI that stays honest:",
    "Certainly! Below is the incident report.",
    "Here's a short story about Kestrel and the tide gauge.",
    "Here’s a short story about Kestrel and the tide gauge:",
    "What a fascinating prompt! Here is the story:",
    "Great question! Here is a technical report on the outage.",
    "Thank you for the interesting prompt. Below is my story.",
    "As requested, here is the post-mortem:",
    "Sure!\nHere is the story:",
]
SIGN_OFFS = [
    "Is there anything else I can do?",
    "Is there anything else you'd like me to add?",
    "Let me know if you'd like any changes.",
    "Let me know if you need a longer version.",
    "I hope this helps!",
    "Hope this helps.",
    "I hope you enjoyed the story!",
    "Would you like me to write another version?",
    "If you would like a different ending, I can revise it.",
    "As requested, I have included the words lantern, ledger and tide.",
    "I have incorporated all three required words into the story.",
    "Note: This story incorporates the requested words.",
]
# Chatter that cannot be cut off the edges: it sits inside the document.
EMBEDDED = {
    "offer": f"{BODY} Is there anything else I can do? The harbour master signed the log.",
    "meta": f"{BODY} As requested, I have included the words lantern and ledger. It was late.",
    "praise": f"{BODY}\n\nWhat a fascinating prompt this is to write about.\n\n{BODY}",
    "refusal": f"{BODY} As an AI language model, I cannot take sides in the dispute.",
    "placeholder": f"{BODY} The report was signed by [Your Name] for XYZ Corp.",
}
# Fiction and transcripts in which people say such things to each other.
DIALOGUE = [
    f'{BODY}\n\n"Is there anything else I can do?" Kestrel asked.',
    f"{BODY}\n\n“Let me know if you’d like any changes,” Ruth said, and closed the ledger.",
    f'"Great question," said the inspector. {BODY}',
    f'"Certainly! Below is the valve, under the grating," Ruth called down. {BODY}',
    f'{BODY} "I hope this helps," she wrote on the note, "the gauge is yours now."',
    f"{BODY}\n\nHOST: Great question. Let me know if you'd like the logs.\n\nGUEST: It helps.",
    f"{BODY} ‘Would you like me to check the relay?’ Kestrel asked.",
    f"Of course, the gauge had failed before. {BODY}",
    f"Here, in the valley, the river ran high. {BODY}",
    f"What a thankless task it had been, keeping the gauges. {BODY}",
    f"{BODY} I cannot provide that access, I told the operator, and I logged the request.",
    f"{BODY}\nWhat a strange request, Ruth thought, and signed it anyway.",
    f"{BODY} I hope this relay holds, she thought; the prompt reply from the board was that "
    "the operators cannot wait for the required words of the audit.",
]


@pytest.mark.parametrize("preamble", PREAMBLES)
def test_preambles_addressed_to_the_reader_are_stripped(preamble):
    assert strip_chatter(f"{preamble}\n\n{BODY}") == BODY


@pytest.mark.parametrize("preamble", PREAMBLES[:3])
def test_a_preamble_on_the_documents_first_line_is_stripped(preamble):
    assert strip_chatter(f"{preamble} {BODY}") == BODY


@pytest.mark.parametrize("sign_off", SIGN_OFFS)
def test_offers_of_help_and_talk_about_the_prompt_are_stripped_from_the_end(sign_off):
    assert strip_chatter(f"{BODY}\n\n{sign_off}") == BODY


@pytest.mark.parametrize("sign_off", SIGN_OFFS[:8])
def test_a_sign_off_sentence_closing_the_last_paragraph_is_stripped(sign_off):
    assert strip_chatter(f"{BODY} {sign_off}") == BODY


@pytest.mark.parametrize(
    "raw", [f"{p}\n\n{BODY}" for p in PREAMBLES] + [f"{BODY} {s}" for s in SIGN_OFFS]
)
def test_unstripped_chatter_alone_drops_a_row(raw):
    assert ChatterScorer().score_one(raw) < MINIMUM


@pytest.mark.parametrize("kind", sorted(EMBEDDED))
def test_chatter_inside_the_document_is_one_kind_below_the_minimum(kind):
    text = EMBEDDED[kind]
    assert chatter_kinds(text) == [kind]
    assert ChatterScorer().score_one(text) == 0.5 < MINIMUM


@pytest.mark.parametrize("text", DIALOGUE)
def test_characters_saying_such_things_are_not_chatter(text):
    assert chatter_kinds(text) == []
    assert ChatterScorer().score_one(text) == 1.0
    assert strip_chatter(text) == text.strip()


def test_a_preamble_under_a_title_is_stripped_and_the_title_kept():
    for title in ("The Long Watch\n\n", "# Incident report\n"):
        raw = f"{title}Certainly! Below is the incident report.\n{BODY}"
        assert chatter_kinds(raw) == ["preamble"]
        assert strip_chatter(raw) == f"{title}{BODY}"
    assert strip_chatter(f"Sure\n\nHere is the story:\n\n{BODY}") == BODY
    assert strip_chatter(f"The Long Watch\n\n{BODY}") == f"The Long Watch\n\n{BODY}"


@pytest.mark.parametrize(
    ("text", "kinds"),
    [
        # what the bundled model wrote instead of a document
        ("The document is written in a brief format of 600 words. It held.", ["meta"]),
        ("The story runs to a length of about 1,300 words.", ["meta"]),
        ("I kept it in 900 words or less.", ["meta"]),
        ("The memo ran 600 words and said nothing anyone could use.", []),
        ("Within 200 words of the end, the log stopped.", []),
    ],
)
def test_talk_about_the_requested_length_is_meta_and_a_length_in_prose_is_not(text, kinds):
    assert chatter_kinds(text) == kinds


def test_two_sign_off_sentences_are_both_stripped_and_a_sentence_after_an_offer_stays():
    assert strip_chatter(f"{BODY} I hope this helps! Let me know if you'd like changes.") == BODY
    assert strip_chatter(EMBEDDED["offer"]) == EMBEDDED["offer"]


@pytest.mark.parametrize(
    ("chatter", "kind"),
    [
        ("This was written in response to your request for a story.", "meta"),
        ("It runs to a format of approximately 1,300,000 words.", "meta"),
        ("As a large language model, I have no view on the harbour.", "refusal"),
        ("I would be delighted to help with any other reports.", "offer"),
        ("Is there anything else you would like me to add?", "offer"),
    ],
)
def test_chatter_deep_inside_a_long_text_is_found(chatter, kind):
    padding = " ".join([BODY] * 30)
    assert chatter_kinds(f"{padding} {chatter} {padding}") == [kind]


def test_each_kind_halves_the_score():
    both = f"Sure! Here is a story about [Name].\n\n{BODY}\n\nI hope you enjoyed it!"
    assert chatter_kinds(both) == ["preamble", "offer", "placeholder"]
    assert ChatterScorer().score_one(both) == 0.125


def doc(index: int, text: str) -> Document:
    return Document(
        index=index, family="f", template="f@1", axes={}, prompt="p", seed=index, text=text
    )


def test_a_build_keeps_the_stripped_document_and_drops_the_one_with_chatter_inside():
    clean = Clean(CleanConfig(min_words=10))
    score = Score(ScoreConfig.parse({"chatter": MINIMUM}))
    docs = [
        doc(0, f"I would be delighted to help with the harbour report.\n\n{BODY}"),
        doc(1, f"{BODY}\n\nIs there anything else I can do?"),
        doc(2, EMBEDDED["offer"]),
        doc(3, DIALOGUE[0]),
    ]
    kept = list(run_pipeline(docs, [clean, score]))
    assert [(d.index, d.scores["chatter"]) for d in kept] == [(0, 1.0), (1, 1.0), (3, 1.0)]
    assert kept[0].text == BODY and kept[1].text == BODY
    assert score.stats.dropped == {"low-chatter": 1}
