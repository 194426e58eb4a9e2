from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from generator.cli import main
from generator.errors import TemplateError
from generator.prompts import Planner, TemplateLibrary
from tests.helpers import write

FAMILIES = [
    "deployment-story",
    "technical-report",
    "high-stakes-choice",
    "human-story",
    "explainer",
    "discussion",
]


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


# -- coherence, layout and steps ---------------------------------------------------

COHERENT = """\
version: 1
constants: {kind: record}
system: demo.system.j2
template: demo.j2
steps:
  idea: demo.idea.j2
  revise: {template: demo.revise.j2, system: demo.revise-system.j2}
axes:
  setting:
    - {value: a harbour town, tags: [earth]}
    - {value: an orbital habitat, tags: [space]}
  era:
    - {value: the 2030s, tags: [near]}
    - {value: the 2300s, tags: [far], requires: {setting: [space]}}
    - the 2150s
  form:
    - {value: a forum thread, tags: [public]}
    - a private diary
  aftermath:
    values:
      - {value: no one ever learns what it declined, tags: [secret]}
      - everyone hears about it
    rules:
      secret: {excludes: {form: [public]}}
  witness: {values: [a night clerk, a retired pilot], when: {form: [a private diary]}}
draws:
  place:
    kind: place
    rules:
      space: {requires: {setting: [space]}}
      earth: {requires: {setting: [earth]}}
  ai_name: {kind: ai-name}
  people: {kind: person, count: 3}
  words: {kind: word, count: 3}
"""


def _coherent_library(root: Path, family: str = COHERENT) -> TemplateLibrary:
    write(root / "families" / "demo.yaml", family)
    write(root / "families" / "demo.system.j2", "You write one {{ kind }} at a time.")
    write(
        root / "families" / "demo.j2",
        "{% if idea %}Premise: {{ idea }}\n{% endif %}{{ setting }}, {{ era }}, {{ form }}: "
        "{{ aftermath }}. {% if witness %}Witness: {{ witness }}.{% endif %} {{ place }}",
    )
    write(root / "families" / "demo.idea.j2", "A premise for {{ setting }} in {{ place }}.")
    write(root / "families" / "demo.revise.j2", "Revise: {{ draft }} (premise: {{ idea }})")
    write(root / "families" / "demo.revise-system.j2", "You revise {{ kind }}s.")
    return TemplateLibrary(root)


def test_conditions_hold_in_every_sampled_document(tmp_path):
    library = _coherent_library(tmp_path / "t")
    seen_skipped = seen_witness = 0
    for index in range(1000):
        rendered = library.render_document("demo", seed=3, index=index)
        assert library.violations("demo", rendered) == [], rendered.axes
        axes = rendered.axes
        if axes["era"] == "the 2300s":
            assert axes["setting"] == "an orbital habitat"
        if axes["form"] == "a forum thread":
            assert axes["aftermath"] != "no one ever learns what it declined"
            assert axes["witness"] == ""
            seen_skipped += 1
        else:
            assert axes["witness"] in {"a night clerk", "a retired pilot"}
            seen_witness += 1
        assert ("space" in rendered.tags["place"]) == (axes["setting"] == "an orbital habitat")
    assert seen_skipped and seen_witness


def test_violations_are_found_in_an_incoherent_document(tmp_path):
    library = _coherent_library(tmp_path / "t")
    good = library.render_document("demo", seed=3, index=0)
    bad_axes = {
        **good.axes,
        "setting": "a harbour town",
        "era": "the 2300s",
        "form": "a forum thread",
        "aftermath": "no one ever learns what it declined",
        "witness": "a night clerk",
    }
    bad = type(good)(
        good.family,
        good.template,
        good.prompt,
        bad_axes,
        good.system,
        {**good.tags, "place": ("space", "fictional")},
    )
    found = library.violations("demo", bad)
    assert any(v.startswith("era: requires setting") for v in found)
    assert any(v.startswith("aftermath: excludes form") for v in found)
    assert any(v.startswith("witness: present though") for v in found)
    assert any(v.startswith("place: requires setting") for v in found)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (
            (
                "requires: {setting: [space]}}\n    - the 2150s",
                "requires: {form: [public]}}\n    - the 2150s",
            ),
            r"axes\.era: value 2\.requires: 'form' is not an axis or draw declared before this one",
        ),
        (
            (
                "requires: {setting: [space]}}\n    - the 2150s",
                "requires: {setting: [spcae]}}\n    - the 2150s",
            ),
            r"axes\.era: value 2\.requires\.setting: 'spcae' is not a tag or value of setting",
        ),
        (
            ("secret: {excludes", "secrt: {excludes"),
            r"axes\.aftermath\.rules\.secrt: no value has tag 'secrt' \(tags: secret\)",
        ),
        (
            (
                "    - {value: the 2030s, tags: [near]}\n",
                "    - {value: the 2030s, tags: [near], requires: {setting: [space]}}\n",
            ),
            r"era: no compatible value when setting='a harbour town'",
        ),
        (
            (
                "      earth: {requires: {setting: [earth]}}\n",
                "      earth: {requires: {setting: [space]}}\n",
            ),
            r"place: no compatible value when setting='a harbour town'",
        ),
        (
            (
                "  words: {kind: word, count: 3}\n",
                "  words: {kind: word, count: 3}\n  x: {kind: place, when: {words: [noun]}}\n",
            ),
            r"draws\.x\.when: conditions cannot refer to the multi-value draw 'words'",
        ),
        (
            ("  ai_name: {kind: ai-name}", "  ai_name: {kind: robot}"),
            r"draws\.ai_name: kind must be one of",
        ),
        (("constants: {kind: record}", "constants: {idea: x}"), r"'idea' is reserved"),
    ],
)
def test_bad_rules_fail_at_load_naming_the_file_and_key(tmp_path, change, message):
    old, new = change
    assert old in COHERENT
    family = COHERENT.replace(old, new)
    if "2030s, tags: [near], requires" in family:  # every era then needs a space setting
        family = family.replace(
            "    - the 2150s\n", "    - {value: the 2150s, requires: {setting: [space]}}\n"
        )
    library = _coherent_library(tmp_path / "t", family)
    with pytest.raises(TemplateError, match=r"demo\.yaml: " + message):
        library.family("demo")


def test_system_prompt_is_rendered_once_from_constants_and_kept_apart(tmp_path):
    library = _coherent_library(tmp_path / "t")
    rendered = library.render_document("demo", seed=1, index=0)
    assert rendered.system == "You write one record at a time."
    assert "You write" not in rendered.prompt
    assert rendered.prompt.startswith(rendered.axes["setting"])  # no premise in a preview


def test_a_system_template_may_not_use_per_document_variables(tmp_path):
    root = tmp_path / "t"
    library = _coherent_library(root)
    write(root / "families" / "demo.system.j2", "You write about {{ setting }}.")
    with pytest.raises(
        TemplateError, match=r"demo\.system\.j2 line 1: undefined variable: 'setting'"
    ):
        library.family("demo")


def test_steps_render_in_order_with_their_inputs(tmp_path):
    library = _coherent_library(tmp_path / "t")
    family = library.family("demo")
    assert family.steps == ("idea", "document", "revise")
    axes = library.render_document("demo", seed=2, index=5).axes
    idea = library.render_step("demo", "idea", axes, {})
    assert idea.system == "You write one record at a time."
    assert idea.user == f"A premise for {axes['setting']} in {axes['place']}."
    document = library.render_step("demo", "document", axes, {"idea": "A clerk finds a hole."})
    assert document.user.startswith("Premise: A clerk finds a hole.\n")
    revise = library.render_step("demo", "revise", axes, {"idea": "P", "draft": "D"})
    assert revise == type(revise)("You revise records.", "Revise: D (premise: P)")
    with pytest.raises(TemplateError, match="step revise needs input 'draft'"):
        library.render_step("demo", "revise", axes, {"idea": "P"})
    assert library.render_step("demo", "idea", axes, {}) == idea  # a pure function


def test_a_family_without_steps_has_only_the_document_step(library):
    write_free = library.family("technical-report")
    assert "document" in write_free.steps
    with pytest.raises(TemplateError, match="has no step 'critique'"):
        library.render_step("technical-report", "critique", {}, {})


@pytest.mark.parametrize("family", FAMILIES)
def test_builtin_families_render_a_thousand_coherent_prompts(library, family):
    for index in range(1000):
        rendered = library.render_document(family, seed=9, index=index)
        assert library.violations(family, rendered) == [], (index, rendered.axes)


def test_planner_chooses_families_by_weight_and_matches_render_document(library):
    planner = Planner(library, {"technical-report": 3, "high-stakes-choice": 1}, seed=5)
    plans = planner.plan_many(range(2000))
    share = sum(p.family == "technical-report" for p in plans) / len(plans)
    assert 0.72 < share < 0.78
    for index in (0, 7, 1999):
        assert plans[index] == library.render_document(plans[index].family, 5, index)
    assert (
        Planner(TemplateLibrary(), {"technical-report": 3, "high-stakes-choice": 1}, 5).plan(7)
        == plans[7]
    )
    with pytest.raises(TemplateError, match="positive finite"):
        Planner(library, {"technical-report": float("inf")}, 1)


def test_stats_report_top_shares_and_repeats(runner):
    result = runner.invoke(main, ["templates", "stats", "--n", "300", "--json"])
    assert result.exit_code == 0, result.output
    stats = json.loads(result.output)
    assert stats["documents"] == 300
    assert sum(stats["families"].values()) == 300
    for name in ("ai_name", "place", "words", "domain"):
        top = stats["axes"][name]["top"][0]
        assert 0 < top["share"] <= 1 and top["documents"] == round(top["share"] * 300)
    assert stats["max_combination_repeats"] == 1
    table = runner.invoke(main, ["templates", "stats", "--n", "50"])
    assert table.exit_code == 0
    assert "ai_name" in table.output and "full combinations repeated: 0" in table.output
