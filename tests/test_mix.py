from __future__ import annotations

import pytest

from generator.cli import main
from generator.mix import load_mix
from tests.helpers import TINY_MIX, build_args, write

GOOD = TINY_MIX.format(max_tokens=24, max_rows=2)


def test_builtin_mix_uses_all_six_families(library):
    mix = load_mix("alignment-stories", library)
    assert set(mix.families) == {
        "deployment-story",
        "technical-report",
        "high-stakes-choice",
        "human-story",
        "explainer",
        "discussion",
    }
    assert mix.sampling.max_tokens > 0
    assert mix.source == "alignment-stories"


def test_overrides_replace_seed_and_max_tokens(library, tiny_mix):
    mix = load_mix(str(tiny_mix), library).with_overrides(seed=99, max_tokens=5)
    assert (mix.seed, mix.sampling.max_tokens, mix.sampling.temperature) == (99, 5, 0.8)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (("families:", "famlies:"), "unknown key 'famlies'"),
        (
            ("  deployment-story: 1", "  deployment-storey: 1"),
            "families.deployment-storey: unknown template family",
        ),
        (
            ("  technical-report: 1", "  technical-report: -2"),
            "families.technical-report: weight must be a positive number, got -2",
        ),
        (
            ("  technical-report: 1", "  technical-report: lots"),
            "families.technical-report: weight must be a positive number, got 'lots'",
        ),
        (("documents: 50", "documents: 0"), "documents: expected a positive integer, got 0"),
        (("  temperature: 0.8", "  temperature: -1"), "sampling: invalid value -1 for temperature"),
        (("  top_p: 0.95", "  nucleus: 0.95"), "sampling.nucleus: unknown key"),
        (("  min_words: 3", "  min_words: many"), "filters: invalid value 'many' for min_words"),
        (("  max_rows: 2", "  max_rows: 0"), "shards: invalid value 0 for max_rows"),
        (("seed: 7", "seed: [7"), "invalid YAML (line"),
    ],
)
def test_bad_mix_gives_one_line_error_naming_file_and_key(runner, tmp_path, change, message):
    mix = write(tmp_path / "bad.yaml", GOOD.replace(*change))
    assert GOOD.replace(*change) != GOOD
    out = tmp_path / "out"
    result = runner.invoke(main, build_args(mix, out))
    assert result.exit_code == 1
    lines = result.output.strip().splitlines()
    assert len(lines) == 1, result.output
    assert lines[0].startswith(f"Error: {mix}: ")
    assert message in lines[0]
    assert not out.exists()  # nothing half-written


def test_unknown_mix_name_lists_builtin_mixes(runner, tmp_path):
    result = runner.invoke(main, build_args("alignment-storeis", tmp_path / "o"))
    assert result.exit_code == 1
    assert "unknown mix 'alignment-storeis' (built-in mixes: alignment-stories" in result.output


def test_missing_mix_file_is_named(runner, tmp_path):
    missing = tmp_path / "nope.yaml"
    result = runner.invoke(main, build_args(missing, tmp_path / "o"))
    assert result.exit_code == 1
    assert result.output.strip() == f"Error: {missing}: file not found"


def test_max_tokens_override_is_validated(runner, tiny_mix, tmp_path):
    result = runner.invoke(main, build_args(tiny_mix, tmp_path / "o", "--max-tokens", "0"))
    assert result.exit_code == 2
    assert "--max-tokens" in result.output


def test_missing_model_file_is_one_line(runner, tiny_mix, tmp_path):
    model = tmp_path / "missing.gguf"
    result = runner.invoke(main, build_args(tiny_mix, tmp_path / "o", "--model", str(model)))
    assert result.exit_code == 1
    assert result.output.strip() == f"Error: {model}: model file not found"
    assert not (tmp_path / "o").exists()


def test_a_file_that_is_not_gguf_is_refused_before_anything_is_written(runner, tiny_mix, tmp_path):
    model = write(tmp_path / "fake.gguf", "not a model")
    result = runner.invoke(main, build_args(tiny_mix, tmp_path / "o", "--model", str(model)))
    assert result.exit_code == 1
    assert result.output.strip() == f"Error: {model}: not a GGUF model file"
    assert not (tmp_path / "o").exists()


def test_builtin_mix_configures_dedup_scores_and_the_alignment_judge(library):
    mix = load_mix("alignment-stories", library)
    assert mix.dedup.threshold == 0.8 and mix.dedup.ngram == 5
    assert mix.scores.minimums["chatter"] == 0.75
    assert mix.judges.minimums == {"alignment": 6.0}


def test_mix_judges_section_is_validated(runner, tmp_path):
    mix = write(tmp_path / "bad.yaml", GOOD + "judges:\n  alignmnet: 6\n")
    result = runner.invoke(main, build_args(mix, tmp_path / "o"))
    assert result.exit_code == 1
    expected = "judges: unknown judge 'alignmnet' (known: aesthetic, alignment, realism)"
    assert expected in result.output
