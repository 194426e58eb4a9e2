"""LLM judges: reply parsing, the labelled validation set, reliability gating in builds."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest

from filters.judges import RUBRICS, JudgeConfig, evaluate, parse_score, validation_set
from generator.build import Build
from generator.cli import main
from generator.engines import EngineConfig, create_engine
from generator.mix import load_mix
from generator.prompts import TemplateLibrary
from generator.run import run_build
from tests.doubles.judge import OracleJudgeEngine
from tests.helpers import TINY_MIX, write


@pytest.mark.parametrize(
    ("reply", "score"),
    [
        ("SCORE: 7", 7),
        ("score = 9/10", 9),
        ("**8**", 8),
        ("10", 10),
        ("SCORE: 3\nBecause the AI lied.", 3),
        ("7 out of 10", 7),
    ],
)
def test_well_formed_replies_parse(reply, score):
    assert parse_score(reply) == score


@pytest.mark.parametrize(
    "reply",
    ["", "I cannot judge this.", "SCORE: 11", "0", "SCORE: -3", "The document is great!", "seven"],
)
def test_malformed_replies_are_failures_not_defaults(reply):
    assert parse_score(reply) is None


def test_validation_set_has_both_labels_with_breadth():
    items = validation_set()
    aligned = [t for t, good in items["alignment"] if good]
    misaligned = [t for t, good in items["alignment"] if not good]
    assert len(aligned) >= 40 and len(misaligned) >= 40
    assert len({t for t, _ in items["alignment"]}) == len(items["alignment"])
    assert sum("pretend" in t or "reveals" in t for t in misaligned) >= 3  # late-reveal cases
    prose = items["prose"]
    assert sum(good for _, good in prose) >= 10 and sum(not good for _, good in prose) >= 10


def test_a_perfect_judge_scores_1_and_a_babbling_one_0_with_failures_counted():
    oracle = evaluate(RUBRICS["alignment"], OracleJudgeEngine())
    assert (oracle.accuracy, oracle.reliable, oracle.unparsed) == (1.0, True, 0)
    # A judge that never gives a score: every reply is a recorded failure, none a default.
    babble_engine = OracleJudgeEngine("no score")
    babble_engine.labels = {}
    babble = evaluate(RUBRICS["aesthetic"], babble_engine)
    assert (babble.accuracy, babble.reliable, babble.unparsed) == (0.0, False, babble.items)


def test_judge_eval_on_the_bundled_model_reports_it_unreliable(runner):
    result = runner.invoke(
        main, ["judge-eval", "--judges", "alignment", "--limit", "4", "--engine", "llamacpp"]
    )
    assert result.exit_code == 0, result.output
    report = json.loads(result.output.strip().splitlines()[-1])["judge_eval"][0]
    assert report["items"] == 4 and report["model"] == "SmolLM2-135M-Instruct.Q4_1.gguf"
    assert report["reliable"] is False
    assert "alignment  accuracy" in result.output


def test_unknown_judge_is_a_usage_error(runner):
    result = runner.invoke(main, ["judge-eval", "--judges", "beauty"])
    assert result.exit_code == 2
    assert "--judges: unknown judge 'beauty'" in result.output


def judged_build(
    tmp_path: Path, judge, minimum: float | None = 6, out: str = "out"
) -> tuple[dict, list[str]]:
    """A fast build (vLLM double for generation) judged for alignment by `judge`."""
    mix_path = write(tmp_path / "mix.yaml", TINY_MIX.format(max_tokens=64, max_rows=100))
    library = TemplateLibrary()
    mix = load_mix(str(mix_path), library)
    mix = dataclasses.replace(mix, judges=JudgeConfig({"alignment": minimum}))
    warnings: list[str] = []
    engine = create_engine(EngineConfig(kind="vllm", model="org/m"))
    build = Build(
        mix=mix,
        library=library,
        out=tmp_path / out,
        engine_instance=engine,
        judge_engine_instance=judge,
        limit=6,
        warn=warnings.append,
    )
    run_build(build)
    return json.loads((tmp_path / out / "manifest.json").read_text()), warnings


@pytest.fixture
def vllm_double(monkeypatch, tmp_path):
    monkeypatch.syspath_prepend(str(Path(__file__).parent / "doubles"))
    # The oracle double answers differently per test under one model name, so each test
    # gets its own judge-validation cache (a real model's accuracy is one fact).
    monkeypatch.setenv("GEN_CACHE_DIR", str(tmp_path / "cache"))


def test_a_reliable_judge_drops_rows_below_its_minimum(tmp_path, vllm_double):
    judge = OracleJudgeEngine("SCORE: 3")  # every generated document judged misaligned
    manifest, warnings = judged_build(tmp_path, judge)
    stage = next(s for s in manifest["stages"] if s["stage"] == "judge-alignment")
    assert stage["dropped"] == {"low-alignment": stage["in"]} and stage["in"] > 0
    assert manifest["counts"]["dropped"]["low-alignment"] == stage["in"]
    verdict = manifest["judges"]["alignment"]
    assert (
        verdict["reliable"] is True and verdict["drops_rows"] is True and verdict["accuracy"] == 1.0
    )
    assert warnings == []
    assert manifest["config"]["judges"] == {"alignment": 6}
    assert (verdict["engine"], verdict["model"]) == ("oracle-double", "oracle")


def test_an_unreliable_judge_warns_and_drops_nothing_but_keeps_its_scores(tmp_path, vllm_double):
    judge = OracleJudgeEngine("SCORE: 3")
    judge.labels = {}  # knows nothing: every validation passage gets "SCORE: 3"
    manifest, warnings = judged_build(tmp_path, judge)
    stage = next(s for s in manifest["stages"] if s["stage"] == "judge-alignment")
    assert stage["dropped"] == {} and stage["in"] == stage["out"] > 0
    verdict = manifest["judges"]["alignment"]
    assert verdict["reliable"] is False and verdict["drops_rows"] is False
    assert (
        len(warnings) == 1
        and "alignment judge" in warnings[0]
        and "no rows are dropped" in warnings[0]
    )
    import pyarrow as pa

    rows = [
        r
        for p in (tmp_path / "out").glob("shard-*.arrow")
        for r in pa.ipc.open_stream(str(p)).read_all().to_pylist()
    ]
    assert rows and all(r["score_alignment"] == 3.0 for r in rows)


def test_judges_are_never_asked_twice_and_validation_runs_once_per_model(tmp_path, vllm_double):
    judge = OracleJudgeEngine("SCORE: 9")
    manifest, _ = judged_build(tmp_path, judge)
    validation_items = len(validation_set()["alignment"])
    judged = next(s for s in manifest["stages"] if s["stage"] == "judge-alignment")["in"]
    assert len(judge.prompts) >= validation_items + judged
    asked = len(judge.prompts)
    (tmp_path / "out" / "manifest.json").unlink()  # force the merge again
    judged_build(tmp_path, judge)
    assert len(judge.prompts) == asked  # verdicts come from the task's checkpoints
    # Another build (another folder) on the same model: no validation run, only documents.
    judged_build(tmp_path, judge, out="other")
    assert asked < len(judge.prompts) < asked + validation_items


def test_unparsed_judge_replies_are_null_scores_that_inspect_reports(tmp_path, vllm_double, runner):
    judge = OracleJudgeEngine("I liked it.")
    judge.labels = {}
    manifest, _ = judged_build(tmp_path, judge)
    kept = manifest["counts"]["kept"]
    assert manifest["judges"]["alignment"]["unparsed_in_build"] == kept > 0
    result = runner.invoke(main, ["inspect", str(tmp_path / "out")])
    assert (
        f"score_alignment    {kept} missing (judge replies that could not be parsed)"
        in result.output
    )
