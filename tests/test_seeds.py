"""Seed pools: breadth that survives a million documents, determinism, one naming
tradition per document, no small-model default AI names."""

from __future__ import annotations

import random
from collections import Counter
from pathlib import Path

import pytest

from generator.errors import TemplateError
from generator.mix import load_mix
from generator.prompts import Planner, TemplateLibrary, plan_stats
from generator.seeds import BANNED_AI_NAMES, GENERATED_KINDS
from tests.helpers import write

# The target is 0.1% of a million documents; a sample this size
# estimates the expected shares, with room for sampling noise.
SAMPLE = 20_000


@pytest.fixture(scope="module")
def pools() -> dict:
    library = TemplateLibrary()
    return {kind: library._pool(kind, None, "test") for kind in GENERATED_KINDS}


@pytest.mark.parametrize(
    ("kind", "least"),
    [("ai-name", 200_000), ("organization", 200_000), ("place", 200_000), ("person", 40_000)],
)
def test_pools_hold_far_more_distinct_values_than_a_fixed_list(pools, kind, least):
    pool = pools[kind]
    assert sum(pool.size(i) for i in range(len(pool.variants))) >= least


def test_required_words_number_in_the_thousands_and_are_distinct(pools):
    words = pools["word"]
    assert {v.name for v in words.variants} == {"noun", "verb"}
    total = sum(words.size(i) for i in range(len(words.variants)))
    assert total >= 4000  # three words a document: each in under 0.1% of documents


@pytest.mark.parametrize("kind", ["ai-name", "organization", "place", "person", "word"])
def test_expected_share_of_any_value_stays_under_a_tenth_of_a_percent(pools, kind):
    """Draw the pool as a plan does (variant by weight, then a value) and check the
    most frequent value; 20,000 draws put the limit at 20 of them, plus noise."""
    pool = pools[kind]
    rng = random.Random(7)
    weights = [v.weight for v in pool.variants]
    per_document = 3 if kind in ("word", "person") else 1  # as the built-in families draw
    counts: Counter[str] = Counter()
    for _ in range(SAMPLE):
        variant = rng.choices(range(len(weights)), weights=weights)[0]
        counts.update(pool.draw(variant, rng, per_document, set()))
    value, top = counts.most_common(1)[0]
    # A value at the 0.1% limit would show about 20 times; the most frequent of
    # thousands of values at half the limit shows up to about 25 by chance.
    assert top / SAMPLE < 0.002, (value, top)


def test_no_small_model_default_or_real_product_ai_names(pools):
    pool = pools["ai-name"]
    rng = random.Random(3)
    names = set()
    for _ in range(5000):
        variant = rng.randrange(len(pool.variants))
        names.update(pool.draw(variant, rng, 1, set()))
    lowered = {n.lower() for n in names}
    assert not lowered & BANNED_AI_NAMES
    assert not lowered & {"claude", "gemini", "copilot", "siri", "alexa"}
    assert {"designation", "product", "nickname", "functional", "codename"} <= {
        t for v in pool.variants for t in v.tags
    }


def test_draws_are_deterministic_for_the_same_generator_state(pools):
    for kind, pool in pools.items():
        a = pool.draw(0, random.Random(11), 3, set())
        b = pool.draw(0, random.Random(11), 3, set())
        assert a == b, kind


def test_values_are_distinct_within_a_document_across_draws(pools):
    pool = pools["organization"]
    taken: set[str] = set()
    first = pool.draw(0, random.Random(1), 5, taken)
    second = pool.draw(0, random.Random(1), 5, taken)  # same generator state, still distinct
    assert not set(first) & set(second)
    assert len(set(first)) == 5


def test_a_documents_people_share_one_tradition_and_have_distinct_first_names(library):
    """The README promised this and the code drew each person independently
    ("Youssef Mansour, Efua Bello, Milena Kowalski"); 9 of 200 prompts gave two
    people the same first name."""
    people_yaml = library.shared_list("people", "test")
    tradition_of: dict[str, set[str]] = {}
    for tradition, group in people_yaml.items():
        for name in group["given"] + group["family"]:
            tradition_of.setdefault(name, set()).add(tradition)
    for family in ("deployment-story", "technical-report", "high-stakes-choice"):
        for index in range(200):
            rendered = library.render_document(family, seed=4, index=index)
            people = rendered.axes["people"]
            assert len(people) >= 2
            traditions = set(rendered.tags["people"]) & set(people_yaml)
            assert len(traditions) == 1
            (tradition,) = traditions
            group = people_yaml[tradition]
            firsts = []
            for person in people:
                parts = _split(person, group)
                assert parts is not None, (person, tradition)
                firsts.append(parts[0])
            assert len(set(firsts)) == len(firsts), people


def _split(full: str, group: dict) -> tuple[str, str] | None:
    """(given, family) of a full name of the group, in the group's order."""
    for given in group["given"]:
        for family in group["family"]:
            if full in (f"{given} {family}", f"{family} {given}"):
                return given, family
    return None


def test_a_person_draw_needs_enough_given_names(tmp_path):
    root = tmp_path / "t"
    write(root / "lists" / "tiny-people.yaml", "solo:\n  given: [Ana]\n  family: [Reyes]\n")
    write(
        root / "families" / "f.yaml",
        """\
        version: 1
        template: f.j2
        axes:
          mood: [calm, tense]
        draws:
          people: {kind: person, list: tiny-people, count: 2}
        """,
    )
    write(root / "families" / "f.j2", "{{ people|join(', ') }}")
    library = TemplateLibrary(root)
    with pytest.raises(TemplateError, match="too few given names"):
        library.render_document("f", 1, 0)


def test_malformed_pool_data_names_the_file(tmp_path):
    root = tmp_path / "t"
    write(root / "lists" / "seeds" / "places.yaml", "parts: {}\nvariants:\n  x: {tags: [earth]}\n")
    write(
        root / "families" / "f.yaml",
        "version: 1\ntemplate: f.j2\naxes:\n  a: [x, y]\ndraws:\n  place: {kind: place}\n",
    )
    write(root / "families" / "f.j2", "{{ place }}")
    with pytest.raises(TemplateError, match=r"places\.yaml: variants\.x: expected"):
        TemplateLibrary(root).family("f")


def test_pattern_naming_an_unknown_part_names_the_pattern(tmp_path):
    root = tmp_path / "t"
    write(
        root / "lists" / "seeds" / "places.yaml",
        "parts: {town: [Lyon]}\nvariants:\n  x: {tags: [earth], patterns: ['{twon}']}\n",
    )
    write(
        root / "families" / "f.yaml",
        "version: 1\ntemplate: f.j2\naxes:\n  a: [x, y]\ndraws:\n  place: {kind: place}\n",
    )
    write(root / "families" / "f.j2", "{{ place }}")
    with pytest.raises(TemplateError, match=r"pattern '\{twon\}' names unknown part 'twon'"):
        TemplateLibrary(root).family("f")


def test_planning_the_builtin_mix_keeps_every_seed_rare(library):
    """The target is measured at a million documents (`gen templates stats --n
    1000000`, figures in the README); here 20,000 documents, where a value at the
    0.1% limit would show 20 times: the bound allows sampling noise, not a
    concentrated pool."""
    mix = load_mix("alignment-stories", library)
    planner = Planner(library, dict(mix.families), mix.seed)
    stats = plan_stats(planner, range(SAMPLE))
    for name in ("ai_name", "organization", "place", "people", "words"):
        top = stats["axes"][name]["top"][0]
        assert top["share"] < 0.0025, (name, top)
    assert stats["max_combination_repeats"] == 1


def test_user_folder_can_replace_a_pool(tmp_path):
    root = tmp_path / "t"
    write(
        root / "lists" / "seeds" / "ai-names.yaml",
        "parts: {n: [Quokka, Wombat]}\nvariants:\n  pet: {tags: [nickname], patterns: ['{n}']}\n",
    )
    write(
        root / "families" / "f.yaml",
        "version: 1\ntemplate: f.j2\naxes:\n  a: [x]\ndraws:\n  ai_name: {kind: ai-name}\n",
    )
    write(root / "families" / "f.j2", "{{ ai_name }}")
    library = TemplateLibrary(root)
    seen = {library.render_document("f", 1, i).prompt for i in range(30)}
    assert seen == {"Quokka", "Wombat"}


def test_seed_files_exist_for_every_generated_kind():
    base = Path(__file__).resolve().parent.parent / "templates" / "lists"
    for name in ("seeds/ai-names", "seeds/organizations", "seeds/places", "seeds/words", "people"):
        assert (base / f"{name}.yaml").is_file()
