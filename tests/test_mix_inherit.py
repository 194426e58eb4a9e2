"""Partial mixes take the built-in mix's values (or their `extends:` base's), and every
malformed or hostile mix file is one line naming the file and the key."""

from __future__ import annotations

import pytest

from generator.cli import main
from generator.errors import MixError
from generator.mix import MAX_DOCUMENTS, load_mix
from generator.prompts import TemplateLibrary
from tests.helpers import build_args, write

MINIMAL = "documents: 5\nfamilies: {technical-report: 1}\n"


def test_a_mix_without_sampling_keeps_the_builtin_max_tokens_not_16(library, tmp_path):
    builtin = load_mix("alignment-stories", library)
    mix = load_mix(str(write(tmp_path / "m.yaml", MINIMAL)), library)
    assert mix.sampling == builtin.sampling
    assert mix.sampling.max_tokens == 1536
    assert mix.scores == builtin.scores and mix.scores.minimums["chatter"] == 0.75
    assert (mix.filters, mix.dedup, mix.shards) == (builtin.filters, builtin.dedup, builtin.shards)
    assert mix.judges == builtin.judges
    assert mix.seed == builtin.seed
    assert (mix.name, mix.documents, mix.families) == ("m", 5, {"technical-report": 1.0})
    assert mix.description == ""


def test_a_partial_section_is_merged_key_by_key(library, tmp_path):
    text = MINIMAL + "sampling: {temperature: 0.5}\nfilters: {min_words: 7}\n"
    mix = load_mix(str(write(tmp_path / "m.yaml", text)), library)
    assert (mix.sampling.temperature, mix.sampling.max_tokens, mix.sampling.top_p) == (
        0.5,
        1536,
        0.95,
    )
    assert (mix.filters.min_words, mix.filters.drop_truncated) == (7, True)


def test_named_sets_replace_the_base_so_judges_can_be_switched_off(library, tmp_path):
    text = MINIMAL + "judges: {}\nscores: {slop: 6}\n"
    mix = load_mix(str(write(tmp_path / "m.yaml", text)), library)
    assert mix.judges.minimums == {}
    assert mix.scores.minimums == {"slop": 6.0}


def test_extends_a_user_mix_in_the_templates_mixes_folder(tmp_path):
    templates = tmp_path / "templates"
    write(
        templates / "mixes" / "base.yaml",
        "documents: 40\nseed: 11\nfamilies: {technical-report: 2, deployment-story: 1}\n"
        "sampling: {max_tokens: 300, temperature: 0.6}\n",
    )
    child = write(tmp_path / "child.yaml", "extends: base\nsampling: {temperature: 0.9}\n")
    library = TemplateLibrary(templates)
    mix = load_mix(str(child), library)
    assert (mix.name, mix.documents, mix.seed) == ("child", 40, 11)
    assert mix.families == {"technical-report": 2.0, "deployment-story": 1.0}
    assert (mix.sampling.max_tokens, mix.sampling.temperature) == (300, 0.9)
    # base itself extends the built-in mix: its filters reach the child
    assert mix.filters.min_words == 120


def test_extends_the_builtin_by_name(library, tmp_path):
    mix = load_mix(str(write(tmp_path / "m.yaml", "extends: alignment-stories\n")), library)
    assert mix.families == load_mix("alignment-stories", library).families
    assert mix.name == "m"


def error_line(library: TemplateLibrary, path) -> str:
    with pytest.raises(MixError) as caught:
        load_mix(str(path), library)
    message = str(caught.value)
    assert "\n" not in message
    return message


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            MINIMAL + "sampling: {seed: 3}\n",
            "sampling.seed: not allowed: each document's seed derives from the mix's top-level",
        ),
        ("name: /tmp/x\n" + MINIMAL, "name: expected an identifier"),
        ("name: ../escaped\n" + MINIMAL, "name: expected an identifier"),
        ("name: [a]\n" + MINIMAL, "name: expected an identifier"),
        (
            "documents: 5\nfamilies: {technical-report: 1.0e+308, deployment-story: 1.0e+308}\n",
            "families: the weights add up to more than the largest number",
        ),
        (
            "documents: 100000000000000000000000000000\nfamilies: {technical-report: 1}\n",
            "documents: at most 10**10 per mix",
        ),
        ("documents: 5\n", "missing key 'families' (required unless the mix has extends:"),
        ("families: {technical-report: 1}\n", "missing key 'documents'"),
        ("extends: ../../etc/passwd\n", "extends: expected the name of a mix in a mixes folder"),
        ("extends: nosuch\n", "extends: unknown mix 'nosuch'"),
        ("extends: [1]\n", "extends: expected a mix name"),
        (MINIMAL + "sampling: [1, 2]\n", "sampling: expected a mapping"),
        (MINIMAL + "sampling: {temperature: 2.5}\n", "sampling: invalid value 2.5 for temperature"),
        (
            MINIMAL + "sampling: {max_tokens: 99999999999}\n",
            "invalid value 99999999999 for max_tokens",
        ),
        (MINIMAL + "1: 2\nzz: 3\n", "unknown key 1 (allowed:"),
        (
            "documents: 5\nfamilies: {../../outside/fam: 1}\n",
            "families: '../../outside/fam' is not",
        ),
        ("seed: 99999999999999999999\n" + MINIMAL, "seed: expected an integer from 0 to 2**63-1"),
        ("- a\n- b\n", "expected a mapping at the top level, got a list"),
        ("", "expected a mapping at the top level, got nothing"),
        ("description: {a: 1}\n" + MINIMAL, "description: expected text"),
    ],
)
def test_bad_mixes_are_one_line_naming_file_and_key(library, tmp_path, text, expected):
    path = write(tmp_path / "bad.yaml", text)
    message = error_line(library, path)
    assert message.startswith(f"{path}: "), message
    assert expected in message, message


def test_documents_cap_is_the_documented_maximum(library, tmp_path):
    ok = load_mix(
        str(write(tmp_path / "a.yaml", MINIMAL.replace("5", str(MAX_DOCUMENTS)))), library
    )
    assert ok.documents == MAX_DOCUMENTS
    too_many = write(tmp_path / "b.yaml", MINIMAL.replace("5", str(MAX_DOCUMENTS + 1)))
    assert "at most 10**10" in error_line(library, too_many)


def test_yaml_aliases_are_refused_before_expanding(library, tmp_path):
    bomb = "a: &a [x, x, x, x, x, x, x, x, x]\n" + "".join(
        f"{c}: &{c} [*{p}, *{p}, *{p}, *{p}, *{p}, *{p}, *{p}, *{p}, *{p}]\n"
        for p, c in zip("abcdefgh", "bcdefghi", strict=True)
    )
    path = write(tmp_path / "bomb.yaml", MINIMAL + "description: x\n" + bomb)
    message = error_line(library, path)
    assert "YAML anchors and aliases are not allowed" in message
    assert message.startswith(f"{path}: line 4: ")


def test_non_utf8_mix_file(library, tmp_path):
    path = tmp_path / "latin1.yaml"
    path.write_bytes(("description: caf\xe9\n" + MINIMAL).encode("latin-1"))
    assert error_line(library, path) == f"{path}: not UTF-8 text (invalid byte at offset 16)"


def test_deeply_nested_yaml_is_one_line(library, tmp_path):
    path = write(tmp_path / "deep.yaml", MINIMAL + "description: " + "[" * 5000 + "]" * 5000 + "\n")
    assert "nested too deeply" in error_line(library, path)


def test_extends_loops_are_refused(tmp_path):
    templates = tmp_path / "templates"
    write(templates / "mixes" / "a.yaml", "extends: b\n")
    write(templates / "mixes" / "b.yaml", "extends: a\n")
    library = TemplateLibrary(templates)
    assert "extends: loops back" in error_line(library, templates / "mixes" / "a.yaml")


def test_extends_cannot_follow_a_symlink_out_of_the_mixes_folder(tmp_path):
    outside = write(tmp_path / "outside" / "secret.yaml", MINIMAL)
    templates = tmp_path / "templates"
    (templates / "mixes").mkdir(parents=True)
    (templates / "mixes" / "secret.yaml").symlink_to(outside)
    child = write(tmp_path / "child.yaml", "extends: secret\n")
    assert "extends: unknown mix 'secret'" in error_line(TemplateLibrary(templates), child)


def test_an_error_in_a_base_names_the_base_file(tmp_path):
    templates = tmp_path / "templates"
    base = write(templates / "mixes" / "base.yaml", MINIMAL + "filters: {min_words: -1}\n")
    child = write(tmp_path / "child.yaml", "extends: base\n")
    message = error_line(TemplateLibrary(templates), child)
    assert message.startswith(f"{base}: filters: invalid value -1 for min_words"), message


def test_a_bad_name_is_refused_before_the_output_folder_is_chosen(runner, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    mix = write(tmp_path / "bad.yaml", "name: ../escaped\n" + MINIMAL)
    result = runner.invoke(main, ["build", "--mix", str(mix), "--limit", "1"])
    assert result.exit_code == 1
    assert result.output.strip().startswith(f"Error: {mix}: name: expected an identifier")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.yaml"]


def test_a_file_name_that_is_not_an_identifier_asks_for_a_name(library, tmp_path):
    path = write(tmp_path / "my mix.yaml", MINIMAL)
    assert "(taken from the file name; set name: in the mix)" in error_line(library, path)
    renamed = write(tmp_path / "my mix2.yaml", "name: my-mix\n" + MINIMAL)
    assert load_mix(str(renamed), library).name == "my-mix"


def test_seed_override_is_range_checked(library, tmp_path):
    mix = load_mix(str(write(tmp_path / "m.yaml", MINIMAL)), library)
    with pytest.raises(MixError, match=r"--seed: expected an integer from 0 to 2\*\*63-1"):
        mix.with_overrides(seed=2**64)


def test_cli_reports_sampling_seed_in_one_line(runner, tmp_path):
    mix = write(tmp_path / "s.yaml", MINIMAL + "sampling: {seed: 3}\n")
    result = runner.invoke(main, build_args(mix, tmp_path / "out"))
    assert result.exit_code == 1
    assert len(result.output.strip().splitlines()) == 1
    assert "sampling.seed: not allowed" in result.output
    assert not (tmp_path / "out").exists()
