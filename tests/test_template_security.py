"""Templates as an attacker or a careless user writes them (issue 9, items 7, 10, 11):
names that reach outside the template folders, alias bombs, undecodable files,
renders that would never end or fill memory. Each must end in one line naming
the file, quickly, with nothing outside the folders read."""

from __future__ import annotations

import os
import string
import tempfile
import time
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from generator.cli import main
from generator.errors import TemplateError
from generator.prompts import TemplateLibrary, load_yaml
from tests.helpers import write

SECRET = "TOP-SECRET-LIST-VALUE"


def _family(
    root: Path, axes: str = "  mood: [calm, tense]\n", template: str = "{{ mood }}"
) -> Path:
    write(root / "families" / "fam.yaml", f"version: 1\ntemplate: fam.j2\naxes:\n{axes}")
    write(root / "families" / "fam.j2", template)
    return root


def _one_line(runner, *args: str) -> str:
    result = runner.invoke(main, list(args))
    assert result.exit_code == 1, result.output
    assert "Traceback" not in result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1, result.output
    return lines[0]


@pytest.fixture
def outside(tmp_path: Path) -> Path:
    """A list and a family outside any template folder, as an attacker places them."""
    write(tmp_path / "outside" / "secretlist.yaml", f"- {SECRET}\n")
    write(tmp_path / "outside" / "fam.yaml", "version: 1\ntemplate: x.j2\naxes:\n  a: [b]\n")
    return tmp_path / "outside"


@pytest.mark.parametrize("name", ["../../outside/secretlist", "../outside/secretlist", "ABS"])
def test_list_names_cannot_leave_the_template_folders(runner, tmp_path, outside, name):
    name = str(outside / "secretlist") if name == "ABS" else name
    root = _family(tmp_path / "t", axes=f"  mood: {{list: '{name}'}}\n")
    line = _one_line(runner, "templates", "render", "fam", "--templates", str(root))
    assert "unknown list" in line and "fam.yaml" in line
    assert SECRET not in line


@pytest.mark.parametrize("name", ["../../outside/fam", "../outside/fam", "ABS"])
def test_family_names_cannot_leave_the_template_folders(runner, tmp_path, outside, name):
    name = str(outside / "fam") if name == "ABS" else name
    root = _family(tmp_path / "t")
    line = _one_line(runner, "templates", "render", name, "--templates", str(root))
    assert line.startswith("Error: unknown template family")


def test_symlinks_out_of_the_folder_are_refused(runner, tmp_path, outside):
    root = _family(tmp_path / "t", axes="  mood: {list: leak}\n")
    (root / "lists").mkdir()
    os.symlink(outside / "secretlist.yaml", root / "lists" / "leak.yaml")
    line = _one_line(runner, "templates", "render", "fam", "--templates", str(root))
    assert "unknown list 'leak'" in line
    # A family file and a template symlinked from outside are refused the same way.
    os.symlink(outside / "fam.yaml", root / "families" / "linked.yaml")
    line = _one_line(runner, "templates", "render", "linked", "--templates", str(root))
    assert "unknown template family 'linked'" in line
    write(outside / "evil.j2", SECRET)
    (root / "families" / "fam.j2").unlink()
    os.symlink(outside / "evil.j2", root / "families" / "fam.j2")
    write(root / "families" / "fam.yaml", "version: 1\ntemplate: fam.j2\naxes:\n  mood: [a]\n")
    line = _one_line(runner, "templates", "render", "fam", "--templates", str(root))
    assert "template 'families/fam.j2' not found" in line and SECRET not in line


def test_a_symlink_inside_the_folder_is_followed(tmp_path):
    root = _family(tmp_path / "t", axes="  mood: {list: alias}\n")
    write(root / "lists" / "real.yaml", "- inside\n")
    os.symlink(root / "lists" / "real.yaml", root / "lists" / "alias.yaml")
    assert TemplateLibrary(root).render_document("fam", 1, 0).prompt == "inside"


def test_yaml_alias_bomb_is_refused_at_once(tmp_path):
    bomb = "a: &a [x, x, x, x, x, x, x, x, x]\n" + "".join(
        f"{c}: &{c} [*{p}, *{p}, *{p}, *{p}, *{p}, *{p}, *{p}, *{p}, *{p}]\n"
        for p, c in zip("abcdefgh", "bcdefghi", strict=True)
    )
    path = write(tmp_path / "bomb.yaml", bomb)
    started = time.monotonic()
    with pytest.raises(TemplateError, match=r"bomb\.yaml: invalid YAML.*aliases are not allowed"):
        load_yaml(path, TemplateError)
    assert time.monotonic() - started < 2


@pytest.mark.parametrize("which", ["fam.yaml", "fam.j2", "list"])
def test_files_that_are_not_utf8_give_one_line_naming_them(runner, tmp_path, which):
    root = _family(tmp_path / "t", axes="  mood: {list: words2}\n")
    write(root / "lists" / "words2.yaml", "- fine\n")
    target = {
        "fam.yaml": root / "families" / "fam.yaml",
        "fam.j2": root / "families" / "fam.j2",
    }.get(which, root / "lists" / "words2.yaml")
    target.write_bytes(target.read_bytes() + b"\n# \xff\xfe latin-1 caf\xe9\n")
    line = _one_line(runner, "templates", "render", "fam", "--templates", str(root))
    assert target.name in line and "not UTF-8" in line


HOSTILE = {
    "huge repeat": '{{ "a" * 10000000000 }}',
    "nested loops": (
        "{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}"
    ),
    "huge range": "{% for i in range(10**9) %}{{ i }}{% endfor %}",
    "deep recursion": "{% macro f(n) %}{{ f(n) }}{% endmacro %}{{ f(1) }}",
    "exponential macro": (
        "{% macro f(n) %}{% if n %}{{ f(n - 1) }}{{ f(n - 1) }}{% endif %}{% endmacro %}{{ f(60) }}"
    ),
    "format_map width": '{{ "{a:>999999999}".format_map({"a": 1}) }}',
    "format width argument": '{{ "{a:>{w}}".format(a=1, w=999999999) }}',
    "percent width": '{{ "%999999999d" % 1 }}',
    "format filter": '{{ "%999999999d"|format(1) }}',
    "ljust": '{{ "x".ljust(10000000000) }}',
    "center filter": '{{ "x"|center(999999999) }}',
    "doubling": (
        '{% set ns = namespace(s="ab") %}{% for i in range(60) %}'
        "{% set ns.s = ns.s ~ ns.s %}{% endfor %}{{ ns.s|length }}"
    ),
    "power": "{{ 10 ** 100000000 }}",
    "indent amplifies": '{{ ("x\\n" * 400000)|indent(100) }}',
    "output flood": '{% for i in range(100000) %}{{ "a" * 900000 }}{% endfor %}',
    "string of a long list": "{{ range(100000)|list|string * 5 }}",
    "lipsum": "{{ lipsum(100000) }}",
    "divide by zero": "{{ 1 / 0 }}",
    "bad call": "{{ mood(1) }}",
}


@pytest.mark.parametrize("name", sorted(HOSTILE))
def test_hostile_renders_end_quickly_in_one_line(runner, tmp_path, name):
    root = _family(tmp_path / "t", template=HOSTILE[name])
    started = time.monotonic()
    line = _one_line(runner, "templates", "render", "fam", "--templates", str(root))
    assert time.monotonic() - started < 15
    assert line.startswith("Error: ") and "fam.j2" in line, line


def test_syntax_error_and_missing_include_fail_when_the_family_loads(tmp_path):
    """A build loads its families before it creates anything, so these surface there."""
    root = _family(tmp_path / "t", template="{% include 'partials/nope.j2' %}")
    with pytest.raises(TemplateError, match=r"fam\.yaml: template 'partials/nope\.j2' not found"):
        TemplateLibrary(root).family("fam")
    write(root / "partials" / "broken.j2", "{% if %}")
    write(root / "families" / "fam.j2", "ok {% include 'partials/broken.j2' %}")
    with pytest.raises(TemplateError, match=r"broken\.j2: line 1: "):
        TemplateLibrary(root).family("fam")


def test_an_error_in_an_included_template_names_that_template(runner, tmp_path):
    root = _family(tmp_path / "t", template="Line.\n{% include 'partials/p.j2' %}")
    write(root / "partials" / "p.j2", "one\n{{ nobody }}")
    line = _one_line(runner, "templates", "render", "fam", "--templates", str(root))
    assert line == "Error: template p.j2 line 2: undefined variable: 'nobody' is undefined"


# -- property tests: any input gives a prompt or one TemplateError line ------------

FRAGMENTS = [
    "{{ mood }}",
    "{{ mood|upper }}",
    "{{ mood * 3 }}",
    "{{ mood ~ mood }}",
    "{% for i in range(3) %}",
    "{% for i in range(100000) %}",
    "{% endfor %}",
    "{% if mood %}",
    "{% else %}",
    "{% endif %}",
    "{{ 7 * 6 }}",
    "{{ ''.__class__ }}",
    "{{ missing }}",
    "{% set x = mood %}",
    "{{ x }}",
    "{% macro m(n) %}{{ m(n) }}{% endmacro %}",
    "{{ m(1) }}",
    "{{ mood|center(50) }}",
    "{{ '%5d' % 3 }}",
    "{% include 'partials/craft.j2' %}",
    "{% include 'nope.j2' %}",
    "{#",
    "#}",
    "{{",
    "}}",
    "{%",
    "%}",
    "\n",
]


@settings(
    max_examples=60,
    deadline=5000,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
@given(
    st.lists(
        st.one_of(st.sampled_from(FRAGMENTS), st.text(string.printable, max_size=8)), max_size=12
    ).map("".join)
)
def test_any_template_text_renders_or_fails_in_one_line(text):
    with tempfile.TemporaryDirectory() as tmp:
        root = _family(Path(tmp), template=text)
        started = time.monotonic()
        try:
            library = TemplateLibrary(root)
            rendered = library.render_document("fam", 1, 0)
            assert isinstance(rendered.prompt, str)
        except TemplateError as exc:
            assert "\n" not in str(exc) and str(exc)
        assert time.monotonic() - started < 5


YAML_VALUES = st.recursive(
    st.one_of(
        st.none(),
        st.booleans(),
        st.integers(),
        st.floats(allow_nan=True),
        st.text(max_size=8),
        st.sampled_from(["fam.j2", "calm", "place", "person", "word", "ai-name", "pick", "x.j2"]),
    ),
    lambda children: st.one_of(
        st.lists(children, max_size=4),
        st.dictionaries(
            st.sampled_from(
                [
                    "value",
                    "tags",
                    "requires",
                    "excludes",
                    "when",
                    "rules",
                    "list",
                    "values",
                    "kind",
                    "count",
                    "mood",
                    "place",
                    "template",
                    "system",
                    "idea",
                    "revise",
                ]
            ),
            children,
            max_size=4,
        ),
    ),
    max_leaves=12,
)
FAMILY_KEYS = ["version", "template", "axes", "draws", "constants", "system", "steps", "name"]


@settings(
    max_examples=80,
    deadline=5000,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
@given(st.dictionaries(st.sampled_from(FAMILY_KEYS), YAML_VALUES, max_size=6))
def test_any_family_yaml_loads_or_fails_in_one_line(data):
    data = {"version": 1, "template": "fam.j2", "axes": {"mood": ["calm"]}, **data}
    with tempfile.TemporaryDirectory() as tmp:
        root = _family(Path(tmp))
        (root / "families" / "fam.yaml").write_text(yaml.safe_dump(data), encoding="utf-8")
        try:
            library = TemplateLibrary(root)
            library.family("fam")
            library.render_document("fam", 1, 0)
        except TemplateError as exc:
            assert "\n" not in str(exc) and str(exc)


@settings(max_examples=40, deadline=5000)
@given(st.binary(max_size=200))
def test_any_bytes_as_a_family_file_load_or_fail_in_one_line(raw):
    with tempfile.TemporaryDirectory() as tmp:
        root = _family(Path(tmp))
        (root / "families" / "fam.yaml").write_bytes(raw)
        try:
            TemplateLibrary(root).family("fam")
        except TemplateError as exc:
            assert "\n" not in str(exc) and str(exc)
