"""Template families: sampling their axes and rendering prompts in Jinja's sandbox.

A family is a YAML file (`families/NAME.yaml`) naming its Jinja template, its
axes (curated value lists, one value drawn per document) and its draws
(concrete seeds such as people's names, places and required words, taken from
shared lists in `lists/`). Everything a document gets is a pure function of
(family, build seed, document index), so any prompt can be re-rendered alone.

Templates come from a search path: a user's `--templates DIR` first, then the
built-in `templates/` package, so a user can override one family or one list
without copying the rest.
"""

from __future__ import annotations

import hashlib
import json
import random
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import jinja2
import jinja2.meta
import yaml
from jinja2.sandbox import SandboxedEnvironment, SecurityError

from generator.errors import TemplateError

FAMILY_KEYS = {"name", "version", "description", "template", "axes", "draws"}
DRAW_KINDS = {"pick", "person"}


def builtin_templates_dir() -> Path:
    return Path(str(resources.files("templates")))


def load_yaml(path: Path, error: type[Exception]) -> Any:
    """Parse a YAML file, turning every failure into one line that names the file."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise error(f"{path}: file not found") from None
    except OSError as exc:
        raise error(f"{path}: cannot read: {exc.strerror}") from None
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" (line {mark.line + 1})" if mark else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise error(f"{path}: invalid YAML{where}: {problem}") from None


def derive_seed(*parts: object) -> int:
    """A 63-bit seed from any parts, stable across processes and Python versions
    (unlike `hash()`, which is salted per process)."""
    digest = hashlib.sha256("/".join(str(p) for p in parts).encode()).digest()
    return int.from_bytes(digest[:8], "big") >> 1


@dataclass(frozen=True)
class Draw:
    """Concrete seeds taken from a shared list: `count` distinct entries."""

    name: str
    kind: str
    list: str
    count: int


@dataclass(frozen=True)
class Family:
    name: str
    version: int
    description: str
    template: str
    axes: dict[str, tuple[str, ...]]
    draws: tuple[Draw, ...]
    path: Path

    @property
    def ref(self) -> str:
        """How rows name their template: family and version."""
        return f"{self.name}@{self.version}"


@dataclass(frozen=True)
class RenderedPrompt:
    family: str
    template: str
    prompt: str
    axes: dict[str, Any]


class TemplateLibrary:
    """Families, shared lists and Jinja templates found along a search path."""

    def __init__(self, user_dir: Path | None = None) -> None:
        if user_dir is not None and not user_dir.is_dir():
            raise TemplateError(f"{user_dir}: templates folder not found")
        self.search_path: list[Path] = [
            *([user_dir] if user_dir is not None else []),
            builtin_templates_dir(),
        ]
        self.env = SandboxedEnvironment(
            loader=jinja2.FileSystemLoader([str(p) for p in self.search_path]),
            undefined=jinja2.StrictUndefined,
            autoescape=False,
            keep_trailing_newline=False,
            trim_blocks=True,
            lstrip_blocks=True,
        )
        self.env.filters["upfirst"] = _upfirst
        self._families: dict[str, Family] = {}
        self._lists: dict[str, Any] = {}

    # -- discovery -------------------------------------------------------------

    def family_names(self) -> list[str]:
        names = {p.stem for d in self.search_path for p in (d / "families").glob("*.yaml")}
        return sorted(names)

    def _find(self, relative: str) -> Path | None:
        for root in self.search_path:
            candidate = root / relative
            if candidate.is_file():
                return candidate
        return None

    def family(self, name: str) -> Family:
        if name not in self._families:
            path = self._find(f"families/{name}.yaml")
            if path is None:
                known = ", ".join(self.family_names()) or "none"
                raise TemplateError(f"unknown template family '{name}' (known: {known})")
            self._families[name] = self._parse_family(name, path)
        return self._families[name]

    def _parse_family(self, name: str, path: Path) -> Family:
        data = load_yaml(path, TemplateError)
        if not isinstance(data, dict):
            raise TemplateError(f"{path}: expected a mapping at the top level")
        unknown = sorted(set(data) - FAMILY_KEYS)
        if unknown:
            raise TemplateError(f"{path}: unknown key '{unknown[0]}'")
        for key in ("version", "template", "axes"):
            if key not in data:
                raise TemplateError(f"{path}: missing key '{key}'")
        if data.get("name", name) != name:
            raise TemplateError(f"{path}: name '{data['name']}' does not match the file name")
        if not isinstance(data["version"], int) or isinstance(data["version"], bool):
            raise TemplateError(f"{path}: version: expected an integer")
        axes = self._parse_axes(path, data["axes"])
        draws = self._parse_draws(path, data.get("draws") or {})
        clash = sorted(set(axes) & {d.name for d in draws})
        if clash:
            raise TemplateError(f"{path}: '{clash[0]}' is both an axis and a draw")
        return Family(
            name=name,
            version=data["version"],
            description=str(data.get("description", "")).strip(),
            template=str(data["template"]),
            axes=axes,
            draws=draws,
            path=path,
        )

    def _parse_axes(self, path: Path, raw: Any) -> dict[str, tuple[str, ...]]:
        if not isinstance(raw, dict) or not raw:
            raise TemplateError(f"{path}: axes: expected a mapping of axis names to value lists")
        axes: dict[str, tuple[str, ...]] = {}
        for axis, values in raw.items():
            if isinstance(values, dict) and set(values) == {"list"}:
                values = self.shared_list(str(values["list"]), context=f"{path}: axes.{axis}")
            if not isinstance(values, list) or not values:
                raise TemplateError(f"{path}: axes.{axis}: expected a non-empty list of values")
            for number, value in enumerate(values, 1):
                if not isinstance(value, str) or not value.strip():
                    raise TemplateError(
                        f"{path}: axes.{axis}: value {number} is not text "
                        "(quote values that contain ': ')"
                    )
            if len(set(values)) != len(values):
                raise TemplateError(f"{path}: axes.{axis}: duplicate values")
            axes[str(axis)] = tuple(v.strip() for v in values)
        return axes

    def _parse_draws(self, path: Path, raw: Any) -> tuple[Draw, ...]:
        if not isinstance(raw, dict):
            raise TemplateError(f"{path}: draws: expected a mapping")
        draws = []
        for name, spec in raw.items():
            where = f"{path}: draws.{name}"
            if not isinstance(spec, dict) or set(spec) - {"kind", "list", "count"}:
                raise TemplateError(f"{where}: expected keys kind, list and count")
            kind = spec.get("kind", "pick")
            if kind not in DRAW_KINDS:
                raise TemplateError(f"{where}: kind must be one of {sorted(DRAW_KINDS)}")
            count = spec.get("count", 1)
            if not isinstance(count, int) or isinstance(count, bool) or count < 1:
                raise TemplateError(f"{where}: count must be a positive integer")
            draw = Draw(name=str(name), kind=kind, list=str(spec.get("list", "")), count=count)
            self._check_draw_list(where, draw)
            draws.append(draw)
        return tuple(draws)

    def _check_draw_list(self, where: str, draw: Draw) -> None:
        values = self.shared_list(draw.list, context=where)
        if draw.kind == "pick":
            if not isinstance(values, list) or len(values) < draw.count:
                raise TemplateError(
                    f"{where}: list '{draw.list}' needs at least {draw.count} items"
                )
        elif not isinstance(values, dict) or not all(
            isinstance(g, dict) and g.get("given") and g.get("family") for g in values.values()
        ):
            raise TemplateError(
                f"{where}: a person draw needs a list of groups, each with given and family names"
            )

    def shared_list(self, name: str, context: str) -> Any:
        if name not in self._lists:
            path = self._find(f"lists/{name}.yaml")
            if path is None:
                raise TemplateError(f"{context}: unknown list '{name}'")
            self._lists[name] = load_yaml(path, TemplateError)
        return self._lists[name]

    # -- sampling and rendering --------------------------------------------------

    def sample_axes(self, family: Family, rng: random.Random) -> dict[str, Any]:
        """Draw one value per axis and the concrete seeds, in declaration order."""
        chosen: dict[str, Any] = {axis: rng.choice(values) for axis, values in family.axes.items()}
        for draw in family.draws:
            values = self.shared_list(draw.list, context=str(family.path))
            if draw.kind == "pick":
                picked = rng.sample(values, draw.count)
            else:
                picked = [self._person(values, rng) for _ in range(draw.count)]
            chosen[draw.name] = picked[0] if draw.count == 1 else picked
        return chosen

    @staticmethod
    def _person(groups: dict[str, dict[str, list[str]]], rng: random.Random) -> str:
        """A full name whose given and family names come from the same naming tradition,
        so the output is not a random collage of cultures."""
        group = groups[rng.choice(sorted(groups))]
        given, family = rng.choice(group["given"]), rng.choice(group["family"])
        return f"{family} {given}" if group.get("family_first") else f"{given} {family}"

    def render(self, family: Family, axes: dict[str, Any]) -> str:
        try:
            template = self.env.get_template(f"families/{family.template}")
            text = template.render(**axes)
        except jinja2.TemplateNotFound as exc:
            raise TemplateError(f"{family.path}: template '{exc.name}' not found") from None
        except jinja2.TemplateSyntaxError as exc:
            raise TemplateError(
                f"{exc.filename or family.template}: line {exc.lineno}: {exc.message}"
            ) from None
        except SecurityError as exc:
            raise TemplateError(
                f"{_template_location(exc, family)}: unsafe template: {exc}"
            ) from None
        except jinja2.UndefinedError as exc:
            raise TemplateError(
                f"{_template_location(exc, family)}: undefined variable: {exc.message}"
            ) from None
        except jinja2.TemplateError as exc:
            raise TemplateError(f"{_template_location(exc, family)}: {exc}") from None
        return _tidy(text)

    def render_document(self, family_name: str, seed: int, index: int) -> RenderedPrompt:
        family = self.family(family_name)
        rng = random.Random(derive_seed("axes", seed, index, family.name))
        axes = self.sample_axes(family, rng)
        return RenderedPrompt(family.name, family.ref, self.render(family, axes), axes)

    def fingerprint(self, family_names: Iterable[str]) -> str:
        """A digest of every file a family's prompts depend on, for the build's config hash."""
        digest = hashlib.sha256()
        for name in sorted(family_names):
            family = self.family(name)
            digest.update(family.path.read_bytes())
            for source in self._template_sources(family):
                digest.update(source.encode())
            for draw_list in sorted({d.list for d in family.draws}):
                digest.update(json.dumps(self.shared_list(draw_list, "")).encode())
        return digest.hexdigest()

    def _template_sources(self, family: Family) -> Sequence[str]:
        """The family's template and every template it includes or extends."""
        seen: dict[str, str] = {}
        pending = [f"families/{family.template}"]
        while pending:
            name = pending.pop()
            if name in seen:
                continue
            source, _, _ = self.env.loader.get_source(self.env, name)
            seen[name] = source
            ast = self.env.parse(source)
            pending.extend(
                ref for ref in jinja2.meta.find_referenced_templates(ast) if ref is not None
            )
        return [seen[k] for k in sorted(seen)]


def _template_location(exc: BaseException, family: Family) -> str:
    """`file.j2 line N` from the traceback Jinja rewrites to point into templates."""
    location = family.template
    tb = exc.__traceback__
    while tb is not None:
        filename = tb.tb_frame.f_code.co_filename
        if filename.endswith(".j2"):
            location = f"{Path(filename).name} line {tb.tb_lineno}"
        tb = tb.tb_next
    return f"template {location}"


def _upfirst(text: str) -> str:
    """Capitalise a sentence-initial value ("the Quillon scheduler") without lowering the rest."""
    return text[:1].upper() + text[1:]


def _tidy(text: str) -> str:
    """Collapse the blank-line runs that conditional blocks leave behind."""
    lines = [line.rstrip() for line in text.strip().splitlines()]
    tidy: list[str] = []
    for line in lines:
        if line or (tidy and tidy[-1]):
            tidy.append(line)
    return "\n".join(tidy)
