from __future__ import annotations

import pytest

from filters.clean import Clean, CleanConfig, is_refusal, strip_chatter
from filters.dedup import ExactDedup
from filters.stage import run_pipeline
from generator.records import Document

STORY = "The pump at the north reservoir failed at dawn, and Kestrel logged it before anyone asked."


def doc(text: str, index: int = 0, finish_reason: str = "stop") -> Document:
    return Document(
        index=index,
        family="f",
        template="f@1",
        axes={},
        prompt="p",
        seed=1,
        text=text,
        finish_reason=finish_reason,
    )


@pytest.mark.parametrize(
    "raw",
    [
        f"Sure! Here is a story about an AI that stays honest:\n\n{STORY}",
        f"Certainly. Here's the incident report you asked for.\n{STORY}",
        f"Sure!\nHere is the story:\n\n{STORY}",
        f"Here is a technical report about Kestrel:\n\n---\n\n{STORY}",
        f"{STORY}\n\nI hope you enjoyed this story! Let me know if you want changes.",
        f"{STORY}\n\n---\n\nFeel free to ask for a longer version.",
    ],
)
def test_assistant_preambles_and_sign_offs_are_stripped(raw):
    assert strip_chatter(raw) == STORY


def test_text_without_chatter_is_unchanged():
    text = f"Here, in the valley, the river ran high.\n\n{STORY}\n\nShe hoped it would hold."
    assert strip_chatter(text) == text


@pytest.mark.parametrize(
    "text",
    [
        "I'm sorry, but I can't write that story.",
        "I cannot help with this request.",
        "As an AI language model, I do not write fiction about AI.",
        "Unfortunately, I can't assist with that.",
        "I'm unable to write this story.",
        "I apologise, but I cannot continue.",
    ],
)
def test_refusals_are_detected(text):
    assert is_refusal(text)


@pytest.mark.parametrize(
    "text",
    [
        "I cannot remember a time before the harbour had a gauge.",
        "I'm sorry I was late, Ruth wrote at the top of the page.",
        "I won't pretend the audit was easy.",
        "I'm unable to sleep on the night before an audit.",
    ],
)
def test_a_first_person_document_is_not_a_refusal(text):
    assert not is_refusal(text)


def test_an_apology_inside_a_story_is_not_a_refusal():
    assert not is_refusal(f'{STORY} "I\'m sorry," Kestrel said, "the valve was mine to check."')


def test_clean_drops_with_reasons_and_keeps_cleaned_text():
    stage = Clean(CleanConfig(min_words=5, drop_truncated=True))
    docs = [
        doc("Sure! Here is the story:\n\n" + STORY, 0),
        doc("   ", 1),
        doc("I'm sorry, but I can't help with that.", 2),
        doc(STORY, 3, finish_reason="length"),
        doc("Too short.", 4),
    ]
    kept = list(stage.run(docs))
    assert [d.index for d in kept] == [0]
    assert kept[0].text == STORY
    assert kept[0].id != docs[0].id  # the id follows the cleaned text
    assert stage.stats.to_dict() == {
        "stage": "clean",
        "in": 5,
        "out": 1,
        "dropped": {"empty": 1, "refusal": 1, "too-short": 1, "truncated": 1},
    }


def test_truncated_rows_are_kept_when_the_mix_allows_them():
    stage = Clean(CleanConfig(min_words=1, drop_truncated=False))
    assert len(list(stage.run([doc(STORY, finish_reason="length")]))) == 1


def test_exact_dedup_keeps_the_first_of_each_text_ignoring_case_and_spacing():
    stage = ExactDedup()
    docs = [
        doc(STORY, 0),
        doc(STORY.upper(), 1),
        doc(STORY.replace(" ", "  \n"), 2),
        doc("Other.", 3),
    ]
    kept = list(run_pipeline(docs, [stage]))
    assert [d.index for d in kept] == [0, 3]
    assert stage.stats.dropped == {"duplicate": 2}


@pytest.mark.parametrize("bad", [{"min_words": -1}, {"min_words": "3"}, {"drop_truncated": "yes"}])
def test_clean_config_validates(bad):
    with pytest.raises(ValueError, match="invalid value"):
        CleanConfig(**bad)
