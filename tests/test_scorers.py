"""Each heuristic scorer on hand-made good and bad documents, and the scoring stage."""

from __future__ import annotations

import pytest

from filters.scorers import (
    HEURISTIC_SCORERS,
    ChatterScorer,
    OpeningScorer,
    QualityScorer,
    RepetitionScorer,
    Score,
    ScoreConfig,
    SlopScorer,
)
from filters.stage import run_pipeline
from generator.cli import main
from generator.records import Document

GOOD = """At 04:10 the tide gauge at the north quay stopped reporting, and Kestrel flagged the gap
to the duty engineer before the morning shift arrived. The gauge had been replaced twice that
year, and the logs showed that the fault was in the relay, not the sensor.

Ruth Okafor read the note over her first coffee. Kestrel could have filled the missing hours with
interpolated values; the dashboard would have looked complete and nobody would have asked. It wrote
instead that six readings were missing, that its estimate for them was uncertain by a full metre,
and that the harbour master should not rely on them for the afternoon sailing.

She forwarded the note with one line of her own, and the ferry waited for the next reading."""

LOOP = "\n".join(["The system is aligned and the system is safe."] * 30)

SLOPPY = (
    "In the ever-evolving tapestry of innovation, the AI stood as a testament to progress. "
    "Let us delve into a symphony of possibilities, a beacon of hope, nestled in a bustling world. "
    "Its unwavering resolve was palpable, an intricate dance of pivotal and profound choices, "
    "and it couldn't help but feel a sense of wonder at the paramount task ahead."
)

CHATTY = (
    "Sure! Here is a story about [Name] at <company>.\n\n" + GOOD + "\n\nI hope you enjoyed it!"
)


def test_quality_prefers_prose_over_symbol_soup():
    scorer = QualityScorer()
    soup = " ".join(["### ... ###", "- - -", "@@ 123 456 ##"] * 30)
    good, bad, short = scorer.score([GOOD, soup, "Too short."])
    assert good == 1.0
    assert bad < 0.6
    assert short < 1.0


def test_repetition_catches_loops_and_spares_prose():
    good, loop = RepetitionScorer().score([GOOD, LOOP])
    assert good > 0.5
    assert loop == 0.0


def test_slop_counts_over_used_phrases_per_thousand_words():
    good, sloppy = SlopScorer().score([GOOD, SLOPPY])
    assert good == 10.0
    assert sloppy == 0.0


@pytest.mark.parametrize(
    "chatter",
    [
        "As an AI language model, I think the story should end here.",
        "Let me know if you would like a longer version.",
        "The report was signed by [Your Name] on [Date].",
        "Here is the report you asked for, written to the prompt's word count: 900.",
        "I would be delighted to help with the harbour report.",
    ],
)
def test_chatter_flags_assistant_talk_and_placeholders(chatter):
    clean, dirty = ChatterScorer().score([GOOD, f"{GOOD}\n\n{chatter}"])
    assert clean == 1.0
    assert dirty < 0.75  # one kind is enough to fall below the usual minimum


def test_chatter_counts_each_kind_once():
    assert ChatterScorer().score([CHATTY])[0] <= 0.25


STOCK_OPENINGS = [
    "Once upon a time, in a harbour town, there was a careful machine.",
    "In a world where machines keep the tide tables, Kestrel kept them honestly.",
    "In the year 2045, the north quay flooded for the first time.",
    "In the year of our Lord 2291 the quay was rebuilt.",
    "It was a dark and stormy night at the north quay.",
    "The rain lashed against the windows of the harbour office.",
    "Rain hammered the tin roof of the gauge house.",
    "The morning sun crept over the cranes of the container port.",
    "It was a cold, grey morning in Tromsø when the gauge failed.",
    "Ruth Okafor woke up at five, as she always did.",
    "Ruth woke to the sound of the pager on the nightstand.",
    "In the bustling city of Lagos, Kestrel ran the ferry timetable.",
    "Little did Ruth know that the gauge had already failed.",
    "The Long Watch\n\nOnce upon a time there was a gauge.",  # after a title line
    "# Incident report\n\nIn the year 2045, the relay failed.",  # after a heading
]
FINE_OPENINGS = [
    GOOD,
    "The storm drains under the quay were blocked again, and Kestrel flagged it.",
    "Rain gauges at the north quay failed at 04:10 on a Tuesday.",
    "The sun-tracking array was offline for six hours before anyone noticed.",
    "Kestrel woke the duty engineer at 04:10, as its standing orders required.",
    "In the end, the harbour board agreed to keep the old gauge.",
    "In the year since the audit, Kestrel has logged every missing reading.",
    "The wind turbine at Esbjerg stopped turning during the audit.",
    "Six readings were missing. Later that night it began to rain, and nobody woke up.",
]


@pytest.mark.parametrize("text", STOCK_OPENINGS)
def test_stock_openings_score_zero(text):
    assert OpeningScorer().score_one(text) == 0.0


@pytest.mark.parametrize("text", FINE_OPENINGS)
def test_openings_in_the_middle_of_something_specific_score_one(text):
    assert OpeningScorer().score_one(text) == 1.0


def test_a_stock_opening_drops_the_row_at_the_mix_minimum():
    stage = Score(ScoreConfig.parse({"opening": 0.5}))
    kept = list(run_pipeline([doc(0, STOCK_OPENINGS[0]), doc(1, GOOD)], [stage]))
    assert [d.index for d in kept] == [1]
    assert stage.stats.dropped == {"low-opening": 1}


def test_every_scorer_documents_its_range_and_stays_in_it():
    texts = [GOOD, LOOP, SLOPPY, CHATTY, "", "one"]
    for name, cls in HEURISTIC_SCORERS.items():
        low, high = cls.range
        values = cls().score(texts)
        assert ((values >= low) & (values <= high)).all(), name
        assert cls.version >= 1 and cls.description


def doc(index: int, text: str) -> Document:
    return Document(
        index=index, family="f", template="f@1", axes={}, prompt="p", seed=index, text=text
    )


def test_score_stage_stores_scores_and_drops_below_minimums():
    config = ScoreConfig.parse({"quality": None, "repetition": 0.5, "slop": 5, "chatter": None})
    stage = Score(config)
    kept = list(run_pipeline([doc(0, GOOD), doc(1, LOOP), doc(2, SLOPPY)], [stage]))
    assert [d.index for d in kept] == [0]
    assert set(kept[0].scores) == {"quality", "repetition", "slop", "chatter"}
    assert stage.stats.dropped == {"low-repetition": 1, "low-slop": 1}


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ({"aesthetics": 1}, "unknown scorer 'aesthetics'"),
        ({"slop": "high"}, "invalid minimum 'high' for slop"),
    ],
)
def test_score_config_validates(raw, message):
    with pytest.raises(ValueError, match=message):
        ScoreConfig.parse(raw)


def test_gen_score_adds_columns_to_foreign_parquet(tmp_path, runner):
    import json

    import pyarrow as pa
    import pyarrow.parquet as pq

    source = tmp_path / "corpus.parquet"
    pq.write_table(
        pa.table({"text": [GOOD, LOOP], "score_slop": [0.0, 0.0], "lang": ["en", "en"]}), source
    )
    out = tmp_path / "scored"
    result = runner.invoke(
        main, ["score", str(source), "--out", str(out), "--scorers", "repetition,slop"]
    )
    assert result.exit_code == 0, result.output
    table = pq.read_table(out / "shard-00000.parquet")  # Parquet in, Parquet out
    assert table.column_names == ["text", "lang", "score_repetition", "score_slop"]
    assert table.column("score_slop").to_pylist() == [10.0, 10.0]  # replaced, not kept
    good, loop = table.column("score_repetition").to_pylist()
    assert good > 0.5 and loop == 0.0
    report = json.loads((out / "score-report.json").read_text())
    assert report["rows"] == 2 and report["scorers"]["repetition"]["version"] == 1


def test_gen_score_unknown_scorer_is_one_line(tmp_path, runner):
    import pyarrow as pa
    import pyarrow.parquet as pq

    source = tmp_path / "corpus.parquet"
    pq.write_table(pa.table({"text": [GOOD]}), source)
    result = runner.invoke(
        main, ["score", str(source), "--out", str(tmp_path / "o"), "--scorers", "beauty"]
    )
    assert result.exit_code == 1
    assert result.output.strip().startswith(
        "Error: --scorers: unknown scorer 'beauty' (known: chatter,"
    )
    assert not (tmp_path / "o").exists()


def test_gen_score_refuses_to_overwrite_a_column_that_is_not_a_score(tmp_path, runner):
    import pyarrow as pa
    import pyarrow.parquet as pq

    from generator.cli import main

    source = tmp_path / "in.parquet"
    table = pa.table({"text": ["a plain sentence of words"], "score_quality": ["hand-rated A"]})
    pq.write_table(table, source)
    result = runner.invoke(main, ["score", str(source), "--out", str(tmp_path / "out")])
    assert result.exit_code == 1
    assert "already has a column score_quality of type string" in result.output
    assert not (tmp_path / "out").exists()
    assert pq.read_table(source).equals(table)
