from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from generator.cli import main
from generator.errors import TemplateError
from generator.prompts import TemplateLibrary
from tests.helpers import write

FAMILIES = ["deployment-story", "technical-report", "high-stakes-choice"]


def test_builtin_families_are_listed(runner):
    result = runner.invoke(main, ["templates", "list"])
    assert result.exit_code == 0, result.output
    for family in FAMILIES:
        assert re.search(rf"{family}@\d+ ", result.output)
    assert "alignment-stories" in result.output


@pytest.mark.parametrize("family", FAMILIES)
def test_each_family_samples_at_least_eight_axes_and_concrete_seeds(library, family):
    spec = library.family(family)
    # Eight or more axes with real breadth (a length axis may have only a few values).
    assert sum(len(values) >= 5 for values in spec.axes.values()) >= 8
    assert {d.name for d in spec.draws} >= {"people", "place", "ai_name", "words"}


@pytest.mark.parametrize("family", FAMILIES)
def test_rendering_is_deterministic_per_seed_and_index(library, family):
    first = library.render_document(family, seed=11, index=3)
    again = TemplateLibrary().render_document(family, seed=11, index=3)
    other_index = library.render_document(family, seed=11, index=4)
    other_seed = library.render_document(family, seed=12, index=3)
    assert first == again
    assert first.prompt != other_index.prompt
    assert first.prompt != other_seed.prompt


@pytest.mark.parametrize("family", FAMILIES)
def test_two_hundred_prompts_are_at_least_95_percent_distinct(runner, family):
    result = runner.invoke(
        main, ["templates", "render", family, "--n", "200", "--seed", "1", "--jsonl"]
    )
    assert result.exit_code == 0, result.output
    records = [json.loads(line) for line in result.output.splitlines()]
    assert len(records) == 200
    assert {"prompt", "axes", "family", "template"} <= set(records[0])
    prompts = [r["prompt"] for r in records]
    assert len(set(prompts)) / len(prompts) >= 0.95
    # Breadth, not just distinctness: the openings and AI names vary too.
    assert len({r["axes"]["ai_name"] for r in records}) >= 50


@pytest.mark.parametrize("family", FAMILIES)
def test_prompts_have_no_unrendered_markup_and_name_the_required_words(library, family):
    for index in range(20):
        rendered = library.render_document(family, seed=5, index=index)
        assert "{{" not in rendered.prompt and "{%" not in rendered.prompt
        for word in rendered.axes["words"]:
            assert word in rendered.prompt
        # The ban on placeholders is spelled out, in the shared system prompt or the brief.
        assert "[Name]" in rendered.system + rendered.prompt


def test_plain_render_shows_axes_and_prompt(runner):
    result = runner.invoke(main, ["templates", "render", "technical-report", "--n", "1"])
    assert result.exit_code == 0
    assert re.search(r"=== technical-report@\d+ #0 \(seed 0\) ===", result.output)
    assert "  document_type: " in result.output


def _user_family(root: Path, name: str, template: str) -> Path:
    write(
        root / "families" / f"{name}.yaml",
        f"""\
        version: 2
        template: {name}.j2
        axes:
          mood: [calm, tense]
        """,
    )
    write(root / "families" / f"{name}.j2", template)
    return root


def test_user_templates_are_searched_before_builtin_ones(runner, tmp_path):
    root = _user_family(tmp_path / "mine", "technical-report", "A {{ mood }} report.")
    result = runner.invoke(
        main,
        [
            "templates",
            "render",
            "technical-report",
            "--templates",
            str(root),
            "--jsonl",
            "--n",
            "1",
        ],
    )
    assert result.exit_code == 0, result.output
    record = json.loads(result.output)
    assert record["template"] == "technical-report@2"
    assert record["prompt"] in {"A calm report.", "A tense report."}


@pytest.mark.parametrize(
    "template",
    ["{{ ''.__class__.__mro__ }}", "{{ cycler.__init__.__globals__ }}", "{{ mood.__class__ }}"],
)
def test_sandbox_refuses_reaching_into_python_internals(runner, tmp_path, template):
    root = _user_family(tmp_path / "evil", "evil", template)
    result = runner.invoke(main, ["templates", "render", "evil", "--templates", str(root)])
    assert result.exit_code == 1
    assert "unsafe template" in result.output
    assert "evil.j2" in result.output
    assert "Traceback" not in result.output
    assert len(result.output.strip().splitlines()) == 1


def test_missing_variable_names_the_variable_and_the_template(runner, tmp_path):
    root = _user_family(
        tmp_path / "t", "gappy", "Line one.\nA {{ mood }} story about {{ protagonist }}."
    )
    result = runner.invoke(main, ["templates", "render", "gappy", "--templates", str(root)])
    assert result.exit_code == 1
    assert result.output.strip() == (
        "Error: template gappy.j2 line 2: undefined variable: 'protagonist' is undefined"
    )


def test_template_syntax_error_is_one_line(runner, tmp_path):
    root = _user_family(tmp_path / "t", "broken", "{% if mood %}unclosed")
    result = runner.invoke(main, ["templates", "render", "broken", "--templates", str(root)])
    assert result.exit_code == 1
    assert "broken.j2: line 1:" in result.output
    assert len(result.output.strip().splitlines()) == 1


def test_unknown_family_lists_the_known_ones(library):
    with pytest.raises(
        TemplateError, match=r"unknown template family 'nope' \(known: deployment-story"
    ):
        library.family("nope")


def test_malformed_family_file_names_file_and_key(tmp_path):
    root = tmp_path / "t"
    write(root / "families" / "odd.yaml", "version: 1\ntemplate: odd.j2\naxes:\n  tone: [a, a]\n")
    with pytest.raises(TemplateError, match=r"odd\.yaml: axes\.tone: duplicate values"):
        TemplateLibrary(root).family("odd")
    write(
        root / "families" / "odd2.yaml", "version: 1\ntemplate: x.j2\naxes:\n  tone:\n    - a: b\n"
    )
    with pytest.raises(TemplateError, match=r"odd2\.yaml: axes\.tone: value 1 is not text"):
        TemplateLibrary(root).family("odd2")
