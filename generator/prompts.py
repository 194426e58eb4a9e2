"""Template families: sampling coherent axes and seeds, and rendering prompts in a bounded sandbox.

A family is a YAML file (`families/NAME.yaml`) naming its Jinja templates, its
axes (curated value lists, one value drawn per document) and its draws
(concrete seeds: people, places, AI names, organisations, required words).
Everything a document gets is a pure function of (family, build seed, document
index), so any prompt can be re-rendered alone.

Family keys: `version`, `template` and `axes` (required); `description`,
`draws`, `constants`, `system`, `steps`, `name`.

Values and coherence. A value (inline under `axes:` or in `lists/*.yaml`) is a
string or a mapping `{value: TEXT, tags: [...], requires: COND, excludes: COND}`;
templates see TEXT. A condition COND is `{earlier_name: [tag-or-value, ...]}`:
`requires` holds when every named earlier axis's value has one of the listed
tags (or is one of the listed values); `excludes` forbids the value when any
does. An axis or draw may declare `when: COND` (unmet: it is skipped and
templates see "" or []) and `rules: {tag: {requires: COND, excludes: COND}}`,
which apply to every value carrying the tag; rules are how generated draws,
whose values carry the tags their pool gives them, are kept coherent. Sampling
follows declaration order (`axes:` top to bottom, then `draws:`) and draws only
among compatible values, so a condition may name only earlier axes and draws.
Loading a family walks every reachable combination of the values that
conditions refer to and fails, naming the file and the key, when one leaves an
axis without a compatible value.

Axis forms: `[values]`, `{list: NAME}` or `{values: [...]}` with optional
`when`/`rules`; an entry with `kind:` is a draw (allowed in `axes:` too, to
place it earlier in the order). Draw kinds: `pick` (`count` distinct values of
`list:`) and the generated kinds of `generator.seeds`: `ai-name`,
`organization`, `place`, `person` (one naming tradition per document,
distinct given names), `word`.

Layout for prefix caching. `system: FILE.j2` is rendered once per family with
only `constants:` in scope and sent as the system message: the standing
instructions shared by every document. `template:` is the per-document brief,
the user turn.

Steps. `steps: {idea: FILE.j2, revise: FILE.j2}` (each may also be `{template:
F, system: G}`) declares generation steps run in the order idea, document,
revise. The idea template sees the axes and constants; the document template
also sees `idea` ("" when no idea was generated, as in previews); the revise
template sees `idea` and `draft`.

Bounds. Templates come from a search path (a user's `--templates DIR` first,
then the built-in `templates/` package); every name resolves inside those
folders, symlinks included. Rendering runs in Jinja's sandbox with limits on
output size, value size, loop iterations, calls and time, so a hostile or
careless template fails with one line instead of hanging or exhausting memory.
"""

from __future__ import annotations

import bisect
import contextvars
import functools
import hashlib
import itertools
import json
import math
import random
import re
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import jinja2
import jinja2.meta
import yaml
from jinja2 import nodes
from jinja2.sandbox import SandboxedEnvironment, SecurityError
from jinja2.visitor import NodeTransformer

from generator.errors import TemplateError
from generator.seeds import GENERATED_KINDS, SeedPool, build_pool

FAMILY_KEYS = {
    "name",
    "version",
    "description",
    "template",
    "axes",
    "draws",
    "constants",
    "system",
    "steps",
}
DRAW_KINDS = {"pick", *GENERATED_KINDS}
STEPS = ("idea", "document", "revise")
RESERVED_NAMES = {"idea", "draft"}
NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]*$")
EMPTY: frozenset[str] = frozenset()
MAX_STATES = 200_000

# Render bounds: far above any real prompt, far below what hurts the machine.
MAX_OUTPUT_CHARS = 200_000
MAX_VALUE_CHARS = 1_000_000
MAX_INT_ARGUMENT = 1_000_000
MAX_ITERATIONS = 1_000_000
MAX_CALLS = 200_000
MAX_RENDER_SECONDS = 2.0
MAX_SOURCE_BYTES = 1_000_000
MAX_YAML_BYTES = 16_000_000


def builtin_templates_dir() -> Path:
    return Path(str(resources.files("templates")))


class _NoAliasLoader(yaml.SafeLoader):
    """Safe YAML without aliases: an alias bomb ("billion laughs") expands a few
    hundred bytes into gigabytes, and no file here needs aliases."""

    def compose_node(self, parent: Any, index: Any) -> Any:
        if self.check_event(yaml.AliasEvent):
            event = self.peek_event()
            raise yaml.YAMLError(f"line {event.start_mark.line + 1}: YAML aliases are not allowed")
        return super().compose_node(parent, index)


def load_yaml(path: Path, error: type[Exception]) -> Any:
    """Parse a YAML file, turning every failure into one line that names the file."""
    try:
        if path.stat().st_size > MAX_YAML_BYTES:
            raise error(f"{path}: file too large (over {MAX_YAML_BYTES} bytes)")
        text = path.read_bytes().decode("utf-8")
    except FileNotFoundError:
        raise error(f"{path}: file not found") from None
    except UnicodeDecodeError as exc:
        raise error(f"{path}: not UTF-8 text (byte {exc.start})") from None
    except OSError as exc:
        raise error(f"{path}: cannot read: {exc.strerror}") from None
    try:
        return yaml.load(text, Loader=_NoAliasLoader)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" (line {mark.line + 1})" if mark else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise error(f"{path}: invalid YAML{where}: {problem}") from None
    except RecursionError:
        raise error(f"{path}: invalid YAML: nested too deeply") from None


def document_seeds(seed: int, index: int) -> tuple[float, int]:
    """Document `index`'s randomness from one hash: a uniform number in [0, 1) that
    picks its family, and a 64-bit seed for its axes (salted per family)."""
    digest = hashlib.sha256(f"plan/{seed}/{index}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64, int.from_bytes(digest[8:16], "big")


def derive_seed(*parts: object) -> int:
    """A 63-bit seed from any parts, stable across processes and Python versions
    (unlike `hash()`, which is salted per process)."""
    digest = hashlib.sha256("/".join(str(p) for p in parts).encode()).digest()
    return int.from_bytes(digest[:8], "big") >> 1


Condition = tuple[tuple[str, frozenset[str]], ...]


@dataclass(frozen=True)
class Choice:
    """A value an axis can take (or a variant of a generated pool), with the tags
    other conditions match and the conditions it must itself meet."""

    text: str
    tags: frozenset[str]
    requires: Condition = ()
    excludes: Condition = ()
    weight: float = 1.0
    marks: frozenset[str] = field(init=False, compare=False)
    sorted_tags: tuple[str, ...] = field(init=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "marks", self.tags | {self.text})
        object.__setattr__(self, "sorted_tags", tuple(sorted(self.tags)))


@dataclass(frozen=True)
class Draw:
    """Concrete seeds: `count` distinct values from a shared list or a generated pool."""

    name: str
    kind: str
    list: str
    count: int
    when: Condition = ()
    rules: dict[str, tuple[Condition, Condition]] = field(default_factory=dict)


@dataclass
class Slot:
    """An axis or a draw in sampling order, with its compatible-choice cache."""

    name: str
    kind: str
    count: int
    choices: tuple[Choice, ...]
    when: Condition
    rules: dict[str, tuple[Condition, Condition]]
    referenced: tuple[str, ...]
    matchable: frozenset[str]
    list_name: str = ""
    pool: SeedPool | None = None
    watched: bool = False
    cache: dict[Any, tuple[tuple[int, ...], list[float]]] = field(default_factory=dict)
    generated: bool = field(init=False)
    static: tuple[tuple[int, ...], list[float]] = field(init=False)
    fast: tuple[Any, ...] = field(init=False, default=())

    def __post_init__(self) -> None:
        self.generated = self.kind in GENERATED_KINDS
        self.static = _compatible(self, {})

    def compile(self) -> None:
        """The fields the sampler reads, as one tuple: unpacking it is cheaper than a
        dozen attribute lookups per slot per document. A plain axis (no conditions,
        one value) gets a shorter tuple and a shorter path."""
        if self.kind == "axis" and not self.referenced and not self.when:
            self.fast = (
                True,
                self.name,
                tuple(c.text for c in self.choices),
                self.watched,
                tuple(c.marks for c in self.choices),
            )
            return
        self.fast = (
            False,
            self.name,
            self.when,
            self.referenced,
            self.generated,
            self.kind == "person",
            self.count,
            self.watched,
            self.static,
            self.cache,
            self.choices,
            self.pool,
            self.kind,
        )


@dataclass(frozen=True)
class Family:
    name: str
    version: int
    description: str
    template: str
    axes: dict[str, tuple[str, ...]]
    draws: tuple[Draw, ...]
    path: Path
    system: str = ""
    steps: tuple[str, ...] = ("document",)
    step_templates: dict[str, tuple[str, str | None]] = field(default_factory=dict)
    constants: dict[str, Any] = field(default_factory=dict)
    slots: tuple[Slot, ...] = ()
    salt: int = 0

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
    system: str = ""
    tags: dict[str, tuple[str, ...]] = field(default_factory=dict, compare=False)


@dataclass(frozen=True)
class StepPrompt:
    system: str
    user: str


# -- the bounded sandbox -------------------------------------------------------------


class _Budget:
    """What one render may still spend; shared by the loop, call and filter guards."""

    __slots__ = ("calls", "deadline", "iterations", "where")

    def __init__(self, where: str) -> None:
        self.deadline = time.monotonic() + MAX_RENDER_SECONDS
        self.iterations = 0
        self.calls = 0
        self.where = where

    def tick(self) -> None:
        if time.monotonic() > self.deadline:
            raise _Exceeded(f"render took longer than {MAX_RENDER_SECONDS:g} s")


class _Exceeded(Exception):
    """A render went past one of its bounds."""


_BUDGET: contextvars.ContextVar[_Budget | None] = contextvars.ContextVar("budget", default=None)


def _budget() -> _Budget:
    budget = _BUDGET.get()
    return budget if budget is not None else _Budget("template")


def _check_size(value: Any) -> Any:
    if isinstance(value, (str, list, tuple, dict, bytes)) and len(value) > MAX_VALUE_CHARS:
        raise _Exceeded(f"a value grew past {MAX_VALUE_CHARS:,} items")
    return value


def _check_arguments(args: Iterable[Any]) -> None:
    for arg in args:
        kind = type(arg)
        if kind is int and abs(arg) > MAX_INT_ARGUMENT:
            raise _Exceeded(f"argument {arg} is larger than {MAX_INT_ARGUMENT:,}")
        if kind is str and ("%" in arg or "{" in arg) and _WIDE_FORMAT.search(arg):
            raise _Exceeded("a format width is larger than 999,999")


_WIDE_FORMAT = re.compile(r"%[-#0 +]*(\d{7,}|\*)|\{[^{}]*:[^{}]*\d{7,}[^{}]*\}")


def _bounded_filter(name: str, func: Callable[..., Any]) -> Callable[..., Any]:
    """A built-in filter that checks its arguments and its result against the bounds.
    `indent` and `center` multiply their input, so their arguments are checked
    against the size they would produce."""

    amplifies = name in ("indent", "center", "wordwrap")

    @functools.wraps(func)
    def bounded(*args: Any, **kwargs: Any) -> Any:
        budget = _budget()
        budget.calls += 1
        if budget.calls > MAX_CALLS:
            raise _Exceeded(f"more than {MAX_CALLS:,} calls")
        if not budget.calls & 63:
            budget.tick()
        _check_arguments(args)
        if kwargs:
            _check_arguments(kwargs.values())
        if amplifies and args:
            text = next((a for a in args if isinstance(a, str)), "")
            widths = [a for a in (*args, *kwargs.values()) if isinstance(a, int)]
            lines = text.count("\n") + 1
            if widths and max(widths) * lines > MAX_VALUE_CHARS:
                raise _Exceeded(f"filter {name} would produce more than {MAX_VALUE_CHARS:,}")
        result = func(*args, **kwargs)
        if isinstance(result, (str, list)) and len(result) > MAX_VALUE_CHARS:
            raise _Exceeded(f"a value grew past {MAX_VALUE_CHARS:,} items")
        return result

    return bounded


def _bounded_iter(iterable: Any) -> Iterator[Any]:
    budget = _budget()
    for item in iterable:
        budget.iterations += 1
        if budget.iterations > MAX_ITERATIONS:
            raise _Exceeded(f"loops ran more than {MAX_ITERATIONS:,} iterations")
        if not budget.iterations & 255:
            budget.tick()
        yield item


def _bounded_concat(parts: list[Any]) -> str:
    if sum(len(p) if isinstance(p, str) else 64 for p in parts) > MAX_VALUE_CHARS:
        raise _Exceeded(f"a value grew past {MAX_VALUE_CHARS:,} characters")
    budget = _budget()
    budget.calls += 1
    if not budget.calls & 255:
        budget.tick()
    return "".join(str(p) for p in parts)


class _Guard(NodeTransformer):
    """Routes every loop and `~` concatenation through a bounded helper, so neither
    nested loops nor repeated doubling can run away."""

    def visit_For(self, node: nodes.For) -> nodes.Node:
        node = self.generic_visit(node)
        node.iter = nodes.Filter(node.iter, "_bounded_iter", [], [], None, None, lineno=node.lineno)
        return node

    def visit_Concat(self, node: nodes.Concat) -> nodes.Node:
        node = self.generic_visit(node)
        return nodes.Filter(
            nodes.List(node.nodes, lineno=node.lineno),
            "_bounded_concat",
            [],
            [],
            None,
            None,
            lineno=node.lineno,
        )


class _Inline(NodeTransformer):
    """Replaces each `{% include "name" %}` by the included template's body in a
    scope of its own, so a render needs no context per include. Only for
    templates without loops or macros, and only as a fast path: any error is
    reproduced on the ordinary template, whose messages name the right file."""

    def __init__(self, env: jinja2.Environment, depth: int) -> None:
        self.env = env
        self.depth = depth

    def visit_Include(self, node: nodes.Include) -> nodes.Node:
        name = node.template.value if isinstance(node.template, nodes.Const) else None
        if not isinstance(name, str) or not node.with_context or self.depth > 8:
            return node
        try:
            source, _, _ = self.env.loader.get_source(self.env, name)
            body = _Inline(self.env, self.depth + 1).visit(self.env.parse(source)).body
        except Exception:
            return node
        return nodes.Scope(body, lineno=node.lineno)


class _Loader(jinja2.FileSystemLoader):
    """Templates only from inside the search path's folders (symlinks resolved),
    only UTF-8, only of sane size."""

    def get_source(
        self, environment: jinja2.Environment, template: str
    ) -> tuple[str, str, Callable[[], bool]]:
        for root in self.searchpath:
            found = _contained(Path(root), template)
            if found is None:
                continue
            try:
                if found.stat().st_size > MAX_SOURCE_BYTES:
                    raise TemplateError(f"{found}: template larger than {MAX_SOURCE_BYTES} bytes")
                source = found.read_bytes().decode("utf-8")
            except UnicodeDecodeError as exc:
                raise TemplateError(f"{found}: not UTF-8 text (byte {exc.start})") from None
            except OSError as exc:
                raise TemplateError(f"{found}: cannot read: {exc.strerror}") from None
            return source, str(found), lambda: True
        raise jinja2.TemplateNotFound(template)


class _BoundedSandbox(SandboxedEnvironment):
    """Jinja's sandbox plus bounds on size, iterations, calls and time."""

    intercepted_binops = frozenset({"*", "**", "+", "%", "//", "/"})

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.filters = {name: _bounded_filter(name, f) for name, f in self.filters.items()}
        self.filters["_bounded_iter"] = _bounded_iter
        self.filters["_bounded_concat"] = _bounded_concat

    def make_globals(self, d: Any = None) -> Any:
        """A plain dict, not Jinja's ChainMap: every render builds a context from a
        template's globals, and iterating a ChainMap there cost more than the
        render itself. The environment's globals are final before any load."""
        return {**self.globals, **(d or {})}

    def _parse(self, source: str, name: str | None, filename: str | None) -> nodes.Template:
        return _Guard().visit(super()._parse(source, name, filename))

    def call(__self, __context: Any, __obj: Any, *args: Any, **kwargs: Any) -> Any:
        budget = _budget()
        budget.calls += 1
        if budget.calls > MAX_CALLS:
            raise _Exceeded(f"more than {MAX_CALLS:,} calls")
        budget.tick()
        _check_arguments(itertools.chain(args, kwargs.values()))
        target = getattr(__obj, "__self__", None)
        if isinstance(target, str) and getattr(__obj, "__name__", "") == "expandtabs":
            tabs = max([8, *(a for a in args if isinstance(a, int))])
            if target.count("\t") * tabs > MAX_VALUE_CHARS:
                raise _Exceeded("expandtabs would produce too much text")
        return _check_size(SandboxedEnvironment.call(__self, __context, __obj, *args, **kwargs))

    def call_binop(self, context: Any, operator: str, left: Any, right: Any) -> Any:
        _budget().tick()
        if operator == "*":
            for seq, times in ((left, right), (right, left)):
                sized = isinstance(seq, (str, list, tuple)) and isinstance(times, int)
                if sized and len(seq) * times > MAX_VALUE_CHARS:
                    raise _Exceeded(f"a value grew past {MAX_VALUE_CHARS:,} items")
        elif operator == "**" and isinstance(left, int) and isinstance(right, int):
            if abs(left) > 1 and right * math.log2(abs(left)) > 4096:
                raise _Exceeded("a power larger than 4,096 bits")
        elif operator == "%" and isinstance(left, str):
            _check_arguments([left, *(right if isinstance(right, tuple) else [right])])
        elif (
            operator == "+"
            and isinstance(left, (str, list, tuple))
            and hasattr(right, "__len__")
            and len(left) + len(right) > MAX_VALUE_CHARS
        ):
            raise _Exceeded(f"a value grew past {MAX_VALUE_CHARS:,} items")
        return self.binop_table[operator](left, right)

    def getattr(self, obj: Any, attribute: str) -> Any:
        if isinstance(obj, str) and attribute in ("format", "format_map"):
            _check_arguments([obj])
        return super().getattr(obj, attribute)


class _FlatSandbox(_BoundedSandbox):
    """The bounded sandbox with includes inlined (see `_Inline`)."""

    def _parse(self, source: str, name: str | None, filename: str | None) -> nodes.Template:
        return _Inline(self, 0).visit(super()._parse(source, name, filename))


def _contained(root: Path, name: str) -> Path | None:
    """`root/name` if it is a file inside `root` once every symlink is resolved."""
    if not name or name.startswith(("/", "\\")) or "\\" in name or "\0" in name:
        return None
    if any(part in ("", ".", "..") for part in name.split("/")):
        return None
    candidate = root / name
    try:
        resolved = candidate.resolve(strict=True)
        base = root.resolve(strict=True)
    except (OSError, RuntimeError):
        return None
    if not resolved.is_relative_to(base) or not resolved.is_file():
        return None
    return resolved


# -- the library -------------------------------------------------------------------


class TemplateLibrary:
    """Families, shared lists, seed pools and Jinja templates found along a search path."""

    def __init__(self, user_dir: Path | None = None) -> None:
        if user_dir is not None and not user_dir.is_dir():
            raise TemplateError(f"{user_dir}: templates folder not found")
        self.search_path: list[Path] = [
            *([user_dir] if user_dir is not None else []),
            builtin_templates_dir(),
        ]
        self.env = _BoundedSandbox(
            loader=_Loader([str(p) for p in self.search_path]),
            undefined=jinja2.StrictUndefined,
            autoescape=False,
            keep_trailing_newline=False,
            trim_blocks=True,
            lstrip_blocks=True,
            auto_reload=False,
            cache_size=-1,
        )
        self.env.filters["upfirst"] = _bounded_filter("upfirst", _upfirst)
        self.env.globals.pop("lipsum", None)  # lipsum(100000) writes megabytes of Latin
        self.flat_env = _FlatSandbox(
            loader=self.env.loader,
            undefined=jinja2.StrictUndefined,
            autoescape=False,
            keep_trailing_newline=False,
            trim_blocks=True,
            lstrip_blocks=True,
            auto_reload=False,
            cache_size=-1,
        )
        self.flat_env.filters = self.env.filters
        self.flat_env.globals = self.env.globals
        self._families: dict[str, Family] = {}
        self._lists: dict[str, Any] = {}
        self._list_paths: dict[str, Path] = {}
        self._pools: dict[str, SeedPool] = {}
        self._systems: dict[tuple[str, str], str] = {}
        self._compiled: dict[str, jinja2.Template] = {}
        self._globals: dict[str, dict[str, Any]] = {}
        self._straight_cache: dict[str, bool] = {}
        self._flat: dict[str, jinja2.Template | None] = {}
        self._scopes: dict[str, dict[str, Any]] = {}

    # -- discovery -------------------------------------------------------------

    def family_names(self) -> list[str]:
        names = set()
        for root in self.search_path:
            for path in (root / "families").glob("*.yaml"):
                if NAME.match(path.stem) and _contained(root, f"families/{path.name}"):
                    names.add(path.stem)
        return sorted(names)

    def _find(self, relative: str) -> Path | None:
        for root in self.search_path:
            found = _contained(root, relative)
            if found is not None:
                return found
        return None

    def family(self, name: str) -> Family:
        if name not in self._families:
            path = self._find(f"families/{name}.yaml") if _valid_name(name) else None
            if path is None:
                known = ", ".join(self.family_names()) or "none"
                shown = json.dumps(name)[1:-1][:80]
                raise TemplateError(f"unknown template family '{shown}' (known: {known})")
            self._families[name] = self._parse_family(name, path)
        return self._families[name]

    def _parse_family(self, name: str, path: Path) -> Family:
        data = load_yaml(path, TemplateError)
        if not isinstance(data, dict):
            raise TemplateError(f"{path}: expected a mapping at the top level")
        unknown = sorted(str(k) for k in set(data) - FAMILY_KEYS)
        if unknown:
            raise TemplateError(f"{path}: unknown key '{unknown[0]}'")
        for key in ("version", "template", "axes"):
            if key not in data:
                raise TemplateError(f"{path}: missing key '{key}'")
        if data.get("name", name) != name:
            raise TemplateError(f"{path}: name '{data['name']}' does not match the file name")
        if not isinstance(data["version"], int) or isinstance(data["version"], bool):
            raise TemplateError(f"{path}: version: expected an integer")
        template = self._template_name(path, "template", data["template"])
        constants = self._parse_constants(path, data.get("constants"))
        slots = self._parse_slots(path, data["axes"], data.get("draws"))
        watched = {n for s in slots for n in s.referenced}
        for slot in slots:
            slot.watched = slot.name in watched
            slot.compile()
        names = [s.name for s in slots]
        clash = sorted({n for n in names if names.count(n) > 1})
        if clash:
            raise TemplateError(f"{path}: '{clash[0]}' is both an axis and a draw")
        for taken in sorted((set(names) | set(constants)) & RESERVED_NAMES):
            raise TemplateError(f"{path}: '{taken}' is reserved for the idea and draft steps")
        for taken in sorted(set(names) & set(constants)):
            raise TemplateError(f"{path}: constants.{taken}: also an axis or draw")
        system = self._template_name(path, "system", data["system"]) if data.get("system") else ""
        steps, step_templates = self._parse_steps(path, data.get("steps"), template, system)
        _check_reachable(path, slots)
        family = Family(
            name=name,
            version=data["version"],
            description=str(data.get("description", "")).strip(),
            template=template,
            axes={s.name: tuple(c.text for c in s.choices) for s in slots if s.kind == "axis"},
            draws=tuple(
                Draw(s.name, s.kind, s.list_name, s.count, s.when, s.rules)
                for s in slots
                if s.kind != "axis"
            ),
            path=path,
            system=system,
            steps=steps,
            step_templates=step_templates,
            constants=constants,
            slots=slots,
            salt=derive_seed("family", name),
        )
        self._check_templates(family)
        return family

    def _template_name(self, path: Path, key: str, raw: Any) -> str:
        if not isinstance(raw, str) or not _valid_name(raw):
            raise TemplateError(f"{path}: {key}: expected a template file name such as x.j2")
        return raw

    @staticmethod
    def _parse_constants(path: Path, raw: Any) -> dict[str, Any]:
        if raw is None:
            return {}
        if not isinstance(raw, dict):
            raise TemplateError(f"{path}: constants: expected a mapping of names to values")
        for key, value in raw.items():
            ok = isinstance(value, (str, int, float)) or (
                isinstance(value, list) and all(isinstance(v, str) for v in value)
            )
            if not isinstance(key, str) or not key.isidentifier() or not ok:
                raise TemplateError(f"{path}: constants.{key}: expected text, a number or a list")
        return dict(raw)

    def _parse_steps(
        self, path: Path, raw: Any, template: str, system: str
    ) -> tuple[tuple[str, ...], dict[str, tuple[str, str | None]]]:
        templates: dict[str, tuple[str, str | None]] = {"document": (template, system or None)}
        if raw is None:
            return ("document",), templates
        if not isinstance(raw, dict):
            raise TemplateError(f"{path}: steps: expected a mapping such as {{idea: idea.j2}}")
        for step, spec in raw.items():
            where = f"steps.{step}"
            if step not in ("idea", "revise"):
                raise TemplateError(f"{path}: {where}: steps are idea and revise")
            if isinstance(spec, dict):
                if set(spec) - {"template", "system"} or "template" not in spec:
                    raise TemplateError(f"{path}: {where}: expected keys template and system")
                own = self._template_name(path, where, spec["template"])
                sys_name = spec.get("system")
                sys_name = (
                    self._template_name(path, f"{where}.system", sys_name) if sys_name else None
                )
                templates[step] = (own, sys_name)
            else:
                templates[step] = (self._template_name(path, where, spec), system or None)
        return tuple(s for s in STEPS if s in templates), templates

    def _parse_slots(self, path: Path, axes_raw: Any, draws_raw: Any) -> tuple[Slot, ...]:
        if not isinstance(axes_raw, dict) or not axes_raw:
            raise TemplateError(f"{path}: axes: expected a mapping of axis names to value lists")
        if draws_raw is not None and not isinstance(draws_raw, dict):
            raise TemplateError(f"{path}: draws: expected a mapping")
        slots: list[Slot] = []
        entries = [("axes", k, v) for k, v in axes_raw.items()]
        entries += [("draws", k, v) for k, v in (draws_raw or {}).items()]
        for section, name, spec in entries:
            where = f"{path}: {section}.{name}"
            if not isinstance(name, str) or not name.isidentifier():
                raise TemplateError(f"{where}: names must be identifiers (letters, digits, _)")
            earlier = {s.name: s for s in slots}
            is_draw = section == "draws" or (isinstance(spec, dict) and "kind" in spec)
            if is_draw:
                slots.append(self._parse_draw(where, name, spec, earlier))
            else:
                slots.append(self._parse_axis(where, name, spec, earlier))
        return tuple(slots)

    def _parse_axis(self, where: str, name: str, spec: Any, earlier: dict[str, Slot]) -> Slot:
        when: Any = None
        rules: Any = None
        if isinstance(spec, dict):
            allowed = {"list", "values", "when", "rules"}
            if set(spec) - allowed or len({"list", "values"} & set(spec)) != 1:
                raise TemplateError(
                    f"{where}: expected a list of values, or a mapping with list or values "
                    "(and optional when, rules)"
                )
            when, rules = spec.get("when"), spec.get("rules")
            if "list" in spec:
                values = self.shared_list(str(spec["list"]), context=where)
                list_name = str(spec["list"])
            else:
                values, list_name = spec["values"], ""
        else:
            values, list_name = spec, ""
        if not isinstance(values, list) or not values:
            raise TemplateError(f"{where}: expected a non-empty list of values")
        choices = tuple(
            _parse_value(where, number, value, earlier) for number, value in enumerate(values, 1)
        )
        texts = [c.text for c in choices]
        if len(set(texts)) != len(texts):
            raise TemplateError(f"{where}: duplicate values")
        slot = _slot(where, name, "axis", 1, choices, when, rules, earlier)
        slot.list_name = list_name
        return slot

    def _parse_draw(self, where: str, name: str, spec: Any, earlier: dict[str, Slot]) -> Slot:
        keys = {"kind", "list", "count", "when", "rules"}
        if not isinstance(spec, dict) or set(spec) - keys:
            raise TemplateError(f"{where}: expected keys kind, list, count, when and rules")
        kind = spec.get("kind", "pick")
        if kind not in DRAW_KINDS:
            raise TemplateError(f"{where}: kind must be one of {sorted(DRAW_KINDS)}")
        count = spec.get("count", 1)
        if not isinstance(count, int) or isinstance(count, bool) or not 1 <= count <= 50:
            raise TemplateError(f"{where}: count must be an integer from 1 to 50")
        if kind == "pick":
            if "list" not in spec:
                raise TemplateError(f"{where}: a pick draw needs list")
            list_name = str(spec["list"])
            values = self.shared_list(list_name, context=where)
            if not isinstance(values, list) or not values:
                raise TemplateError(f"{where}: list '{list_name}' is not a list of values")
            choices = tuple(
                _parse_value(f"{where} (list {list_name})", n, v, earlier)
                for n, v in enumerate(values, 1)
            )
            if len({c.text for c in choices}) < count:
                raise TemplateError(f"{where}: list '{list_name}' needs at least {count} items")
        else:
            list_name = str(spec.get("list", ""))
            pool = self._pool(kind, list_name or None, where)
            choices = tuple(Choice(v.name, v.tags, weight=v.weight) for v in pool.variants)
        slot = _slot(
            where, name, kind, count, choices, spec.get("when"), spec.get("rules"), earlier
        )
        slot.list_name = list_name
        slot.pool = None if kind == "pick" else pool
        return slot

    def shared_list(self, name: str, context: str) -> Any:
        return self._load_list(name, context)[0]

    def _load_list(self, name: str, context: str) -> tuple[Any, Path]:
        if name not in self._lists:
            path = self._find(f"lists/{name}.yaml") if _valid_name(name) else None
            if path is None:
                shown = json.dumps(name)[1:-1][:80]
                raise TemplateError(f"{context}: unknown list '{shown}'")
            self._lists[name] = load_yaml(path, TemplateError)
            self._list_paths[name] = path
        return self._lists[name], self._list_paths[name]

    def _pool(self, kind: str, list_name: str | None, where: str) -> SeedPool:
        key = f"{kind}:{list_name or ''}"
        if key not in self._pools:

            def load(default: str) -> tuple[Any, str]:
                data, path = self._load_list(list_name or default, where)
                return data, str(path)

            self._pools[key] = build_pool(kind, load)
        return self._pools[key]

    def _check_templates(self, family: Family) -> None:
        """Compile every template the family uses (includes too) and render its
        system prompts, so a broken template fails at load, with one line."""
        names = {family.template}
        for own, system in family.step_templates.values():
            names.add(own)
            if system:
                names.add(system)
        for name in sorted(names):
            self._template_sources(family, f"families/{name}")
        for _, system in family.step_templates.values():
            if system:
                self._system(family, system)

    # -- sampling and rendering --------------------------------------------------

    def sample_axes(self, family: Family, rng: random.Random) -> dict[str, Any]:
        """Draw one value per axis and the concrete seeds, in declaration order,
        each among the values compatible with what came before."""
        return self._sample(family, rng)[0]

    def _sample(
        self, family: Family, rng: random.Random
    ) -> tuple[dict[str, Any], dict[str, tuple[str, ...]]]:
        """The hot path of planning: per slot, a cached list of compatible choices
        keyed by the choices of the slots its conditions name, one random number
        (or a pool draw), and bookkeeping only for slots that conditions watch."""
        rand = rng.random
        chosen: dict[str, Any] = {}
        tags: dict[str, tuple[str, ...]] = {}
        ids: dict[str, int] = {}
        marks: dict[str, frozenset[str]] = {}
        tradition = -1
        taken: dict[str, set[str]] = {}
        for slot in family.slots:
            fast = slot.fast
            if fast[0]:
                _, name, texts, watched, all_marks = fast
                at = int(rand() * len(texts))
                chosen[name] = texts[at]
                if watched:
                    ids[name] = at
                    marks[name] = all_marks[at]
                continue
            (_, name, when, referenced, generated, person, count, watched, static, cache,
             choices, pool, kind) = fast  # fmt: skip
            if when and not _holds(when, marks):
                chosen[name] = "" if count == 1 else []
                if generated:
                    tags[name] = ()
                if watched:
                    ids[name] = -1
                    marks[name] = EMPTY
                continue
            if not referenced:
                indices, cumulative = static
            else:
                key = (
                    ids[referenced[0]]
                    if len(referenced) == 1
                    else tuple([ids[n] for n in referenced])
                )
                compatible = cache.get(key)
                if compatible is None:
                    compatible = cache[key] = _compatible(slot, marks)
                indices, cumulative = compatible
            if generated:
                if person and tradition in indices:
                    at = tradition
                else:
                    at = indices[bisect.bisect(cumulative, rand() * cumulative[-1])]
                used = taken.get(kind)
                if used is None:
                    used = taken[kind] = set()
                values = pool.draw(at, rng, count, used)
                chosen[name] = values[0] if count == 1 else values
                choice = choices[at]
                tags[name] = choice.sorted_tags
                if person:
                    tradition = at
                if watched:
                    ids[name] = at
                    marks[name] = choice.tags
            elif count == 1:
                at = indices[int(rand() * len(indices))]
                choice = choices[at]
                chosen[name] = choice.text
                if watched:
                    ids[name] = at
                    marks[name] = choice.marks
            else:
                chosen[name] = [choices[i].text for i in rng.sample(indices, count)]
        return chosen, tags

    def render(self, family: Family, axes: dict[str, Any]) -> str:
        return self._render(family, family.template, axes, {"idea": ""})

    def _render(
        self,
        family: Family,
        template_name: str,
        variables: dict[str, Any],
        extra: dict[str, Any] | None = None,
    ) -> str:
        """Render one template of the family with the family's constants, `variables`
        and `extra` in scope, inside the render bounds, failing with one line."""
        token = _BUDGET.set(_Budget(template_name))
        try:
            flat = self._flat.get(template_name, False)
            if flat is False:
                flat = self._flat[template_name] = self._flat_template(template_name)
            if flat is not None:
                try:
                    scope = self._scopes.get(family.name)
                    if scope is None:
                        scope = self._scopes[family.name] = {
                            **self._flat_globals,
                            **family.constants,
                        }
                    text = "".join(flat.root_render_func(flat.new_context(
                        {**scope, **(extra or {}), **variables}, True
                    )))  # fmt: skip
                    if len(text) <= MAX_OUTPUT_CHARS:
                        return _tidy(text)
                except Exception:
                    pass
                _BUDGET.set(_Budget(template_name))
            template = self._compiled.get(template_name)
            if template is None:
                template = self._compiled[template_name] = self.env.get_template(
                    f"families/{template_name}"
                )
            base = self._globals.get(template_name)
            if base is None:
                base = self._globals[template_name] = dict(template.globals)
            context = template.new_context(
                {**base, **family.constants, **(extra or {}), **variables}, True
            )
            try:
                if self._straight(template_name):
                    text = "".join(template.root_render_func(context))
                else:
                    pieces: list[str] = []
                    size = 0
                    for piece in template.root_render_func(context):
                        size += len(piece)
                        if size > MAX_OUTPUT_CHARS:
                            raise _Exceeded(f"output longer than {MAX_OUTPUT_CHARS:,} characters")
                        pieces.append(piece)
                    text = "".join(pieces)
                if len(text) > MAX_OUTPUT_CHARS:
                    raise _Exceeded(f"output longer than {MAX_OUTPUT_CHARS:,} characters")
            except Exception:
                self.env.handle_exception()
            return _tidy(text)
        except TemplateError:
            raise
        except jinja2.TemplateNotFound as exc:
            raise TemplateError(f"{family.path}: template '{exc.name}' not found") from None
        except jinja2.TemplateSyntaxError as exc:
            raise TemplateError(
                f"{Path(exc.filename or template_name).name}: line {exc.lineno}: {exc.message}"
            ) from None
        except SecurityError as exc:
            raise TemplateError(
                f"{_template_location(exc, template_name)}: unsafe template: {_line(exc)}"
            ) from None
        except jinja2.UndefinedError as exc:
            raise TemplateError(
                f"{_template_location(exc, template_name)}: undefined variable: {exc.message}"
            ) from None
        except _Exceeded as exc:
            raise TemplateError(
                f"{_template_location(exc, template_name)}: template too costly: {exc}"
            ) from None
        except (RecursionError, MemoryError) as exc:
            kind = "recursion too deep" if isinstance(exc, RecursionError) else "out of memory"
            raise TemplateError(f"{_template_location(exc, template_name)}: {kind}") from None
        except Exception as exc:
            raise TemplateError(
                f"{_template_location(exc, template_name)}: {type(exc).__name__}: {_line(exc)}"
            ) from None
        finally:
            _BUDGET.reset(token)

    def _straight(self, template_name: str) -> bool:
        """Whether a template and everything it includes are free of loops, macros,
        call blocks and dynamic includes: its output is then at most a fixed number
        of bounded values, so it can be joined at once instead of piece by piece."""
        known = self._straight_cache.get(template_name)
        if known is None:
            known = True
            pending, seen = [f"families/{template_name}"], set()
            while pending and known:
                name = pending.pop()
                if name in seen:
                    continue
                seen.add(name)
                source, _, _ = self.env.loader.get_source(self.env, name)
                ast = self.env.parse(source)
                loops = (nodes.For, nodes.Macro, nodes.CallBlock, nodes.FilterBlock)
                if any(True for _ in ast.find_all(loops)):
                    known = False
                refs = list(jinja2.meta.find_referenced_templates(ast))
                if None in refs:
                    known = False
                pending.extend(r for r in refs if r is not None)
            self._straight_cache[template_name] = known
        return known

    def _flat_template(self, template_name: str) -> jinja2.Template | None:
        """The inlined form of a straight template, or None (not straight, or it
        does not compile: the ordinary path reports why)."""
        try:
            if not self._straight(template_name):
                return None
            return self.flat_env.get_template(f"families/{template_name}")
        except Exception:
            return None

    @functools.cached_property
    def _flat_globals(self) -> dict[str, Any]:
        return dict(self.flat_env.globals)

    def _system(self, family: Family, name: str | None) -> str:
        if not name:
            return ""
        key = (family.name, name)
        if key not in self._systems:
            self._systems[key] = self._render(family, name, {})
        return self._systems[key]

    def render_document(self, family_name: str, seed: int, index: int) -> RenderedPrompt:
        """Document `index` of a build with `seed`, as if its family were `family_name`."""
        return self._document(self.family(family_name), document_seeds(seed, index)[1])

    def _document(self, family: Family, axes_seed: int) -> RenderedPrompt:
        axes, tags = self._sample(family, random.Random(axes_seed ^ family.salt))
        return RenderedPrompt(
            family.name,
            family.ref,
            self.render(family, axes),
            axes,
            self._system(family, family.system),
            tags,
        )

    def render_step(
        self, family_name: str, step: str, axes: dict[str, Any], inputs: dict[str, str]
    ) -> StepPrompt:
        """The system and user messages of one generation step for one document.
        `inputs` holds the earlier steps' outputs: `idea` for the document step
        (when the family has an idea step), `idea` and `draft` for revise."""
        family = self.family(family_name)
        if step not in family.step_templates:
            raise TemplateError(
                f"{family.path}: family has no step '{step}' (steps: {', '.join(family.steps)})"
            )
        needed = {"idea": (), "document": (), "revise": ("draft",)}[step]
        missing = [n for n in needed if n not in inputs]
        if missing:
            raise TemplateError(f"{family.path}: step {step} needs input '{missing[0]}'")
        own, system = family.step_templates[step]
        extra = {"idea": "" if step == "idea" else inputs.get("idea", "")}
        if step == "revise":
            extra["draft"] = inputs["draft"]
        return StepPrompt(
            self._system(family, system), self._render(family, own, {**axes, **extra})
        )

    def violations(self, family_name: str, rendered: RenderedPrompt) -> list[str]:
        """Every declared rule a rendered document breaks (empty when coherent),
        checked from the family's declarations, not from how the sampler chose."""
        family = self.family(family_name)
        marks: dict[str, frozenset[str]] = {}
        broken = []
        for slot in family.slots:
            value = rendered.axes.get(slot.name)
            skipped = bool(slot.when) and not _holds(slot.when, marks)
            if skipped or value in ("", []):
                if not skipped:
                    broken.append(f"{slot.name}: empty though its when: holds")
                if skipped and value not in ("", []):
                    broken.append(f"{slot.name}: present though its when: fails")
                marks[slot.name] = EMPTY
                continue
            if slot.generated:
                tags = frozenset(rendered.tags.get(slot.name, ()))
                requires, excludes = _rules_for(slot, tags)
                own: frozenset[str] = tags
            else:
                texts = value if isinstance(value, list) else [value]
                by_text = {c.text: c for c in slot.choices}
                unknown = [t for t in texts if t not in by_text]
                if unknown:
                    broken.append(f"{slot.name}: '{unknown[0]}' is not one of its values")
                    marks[slot.name] = EMPTY
                    continue
                picked = [by_text[t] for t in texts]
                requires = tuple(r for c in picked for r in _effective(slot, c)[0])
                excludes = tuple(e for c in picked for e in _effective(slot, c)[1])
                own = frozenset().union(*(c.marks for c in picked))
            for name, names in requires:
                if not marks.get(name, EMPTY) & names:
                    broken.append(f"{slot.name}: requires {name} in {sorted(names)}")
            for name, names in excludes:
                if marks.get(name, EMPTY) & names:
                    broken.append(f"{slot.name}: excludes {name} in {sorted(names)}")
            marks[slot.name] = own
        return broken

    def fingerprint(self, family_names: Iterable[str]) -> str:
        """A digest of every file a family's prompts depend on, for the build's config hash."""
        digest = hashlib.sha256()
        for name in sorted(family_names):
            family = self.family(name)
            digest.update(family.path.read_bytes())
            names = sorted({n for pair in family.step_templates.values() for n in pair if n})
            for template in names:
                for source in self._template_sources(family, f"families/{template}"):
                    digest.update(source.encode())
            for list_name in sorted(self._lists):
                digest.update(list_name.encode())
                digest.update(
                    json.dumps(self._lists[list_name], sort_keys=True, default=str).encode()
                )
        return digest.hexdigest()

    def _template_sources(self, family: Family, root: str) -> Sequence[str]:
        """A template and every template it includes or extends, checked to exist."""
        seen: dict[str, str] = {}
        pending = [root]
        while pending:
            name = pending.pop()
            if name in seen:
                continue
            try:
                source, _, _ = self.env.loader.get_source(self.env, name)
                ast = self.env.parse(source)
            except jinja2.TemplateNotFound as exc:
                raise TemplateError(f"{family.path}: template '{exc.name}' not found") from None
            except jinja2.TemplateSyntaxError as exc:
                raise TemplateError(
                    f"{Path(exc.filename or name).name}: line {exc.lineno}: {exc.message}"
                ) from None
            except RecursionError:
                raise TemplateError(f"{name}: template nested too deeply") from None
            seen[name] = source
            pending.extend(
                ref for ref in jinja2.meta.find_referenced_templates(ast) if ref is not None
            )
        return [seen[k] for k in sorted(seen)]


class Planner:
    """Plans documents of a mix fast: the family by weight, then its axes and prompt.
    Lists, pools and compiled templates are loaded once; a document costs two
    hashes, one seeded generator and one render. `plan(i)` for family f equals
    `library.render_document(f, seed, i)`."""

    def __init__(self, library: TemplateLibrary, families: dict[str, float], seed: int) -> None:
        if not families:
            raise TemplateError("a plan needs at least one family")
        weights = list(families.values())
        if not all(isinstance(w, (int, float)) and math.isfinite(w) and w > 0 for w in weights):
            raise TemplateError("family weights must be positive finite numbers")
        self.library = library
        self.seed = seed
        self.names = list(families)
        total = math.fsum(weights)
        self._cumulative = [math.fsum(weights[: i + 1]) / total for i in range(len(weights))]
        self._families = {name: library.family(name) for name in self.names}

    def family_of(self, index: int) -> str:
        """The family of document `index`: a uniform number from the document's
        own hash, placed on the cumulative weights."""
        return self._family(document_seeds(self.seed, index)[0])

    def _family(self, uniform: float) -> str:
        at = bisect.bisect(self._cumulative, uniform)
        return self.names[min(at, len(self.names) - 1)]

    def plan(self, index: int) -> RenderedPrompt:
        uniform, axes_seed = document_seeds(self.seed, index)
        return self.library._document(self._families[self._family(uniform)], axes_seed)

    def plan_many(self, indices: Iterable[int]) -> list[RenderedPrompt]:
        return [self.plan(i) for i in indices]


def plan_stats(planner: Planner, indices: Iterable[int], top: int = 1) -> dict[str, Any]:
    """How concentrated a plan is, without a model: for every axis and draw, the
    share of documents holding its most frequent value; and how often a full
    combination (every axis and draw of a document) or the combination of the
    curated axes alone repeats. Combinations are counted by 8-byte digests, so a
    million documents fit in memory."""
    values: dict[str, dict[str, int]] = {}
    combos: dict[bytes, int] = {}
    axis_combos: dict[bytes, int] = {}
    families: dict[str, int] = {}
    total = 0
    for index in indices:
        rendered = planner.plan(index)
        total += 1
        families[rendered.family] = families.get(rendered.family, 0) + 1
        family = planner.library.family(rendered.family)
        curated = []
        for name, value in rendered.axes.items():
            counts = values.setdefault(name, {})
            for item in set(value) if isinstance(value, list) else (value,):
                if item:
                    counts[item] = counts.get(item, 0) + 1
            if name in family.axes:
                curated.append(value)
        full = hashlib.blake2b(
            json.dumps([rendered.family, rendered.axes], ensure_ascii=False).encode(),
            digest_size=8,
        ).digest()
        combos[full] = combos.get(full, 0) + 1
        key = hashlib.blake2b(
            json.dumps([rendered.family, curated], ensure_ascii=False).encode(), digest_size=8
        ).digest()
        axis_combos[key] = axis_combos.get(key, 0) + 1
    axes = {}
    for name, counts in sorted(values.items()):
        ranked = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))[:top]
        axes[name] = {
            "distinct": len(counts),
            "top": [{"value": v, "documents": c, "share": c / total} for v, c in ranked],
        }
    return {
        "documents": total,
        "families": families,
        "axes": axes,
        "max_top_share": max(
            (a["top"][0]["share"] for a in axes.values() if a["top"]), default=0.0
        ),
        "repeated_combinations": sum(1 for c in combos.values() if c > 1),
        "max_combination_repeats": max(combos.values(), default=0),
        "repeated_axis_combinations": sum(1 for c in axis_combos.values() if c > 1),
        "max_axis_combination_repeats": max(axis_combos.values(), default=0),
    }


# -- conditions --------------------------------------------------------------------


def _valid_name(name: str) -> bool:
    return isinstance(name, str) and all(NAME.match(part) for part in name.split("/"))


def _parse_condition(where: str, raw: Any, earlier: dict[str, Slot]) -> Condition:
    if raw is None:
        return ()
    if not isinstance(raw, dict) or not raw:
        raise TemplateError(f"{where}: expected a mapping of earlier axis names to tag lists")
    pairs = []
    for name, names in raw.items():
        if name not in earlier:
            raise TemplateError(
                f"{where}: '{name}' is not an axis or draw declared before this one"
            )
        slot = earlier[name]
        if slot.kind == "word" or (slot.kind == "pick" and slot.count > 1):
            raise TemplateError(
                f"{where}: conditions cannot refer to the multi-value draw '{name}'"
            )
        listed = [names] if isinstance(names, str) else names
        if (
            not isinstance(listed, list)
            or not listed
            or not all(isinstance(n, str) for n in listed)
        ):
            raise TemplateError(f"{where}.{name}: expected a list of tags or values")
        unknown = [n for n in listed if n not in slot.matchable]
        if unknown:
            raise TemplateError(f"{where}.{name}: '{unknown[0]}' is not a tag or value of {name}")
        pairs.append((str(name), frozenset(listed)))
    return tuple(pairs)


def _parse_value(where: str, number: int, raw: Any, earlier: dict[str, Slot]) -> Choice:
    if isinstance(raw, str) and raw.strip():
        return Choice(raw.strip(), EMPTY)
    if isinstance(raw, dict) and "value" in raw:
        at = f"{where}: value {number}"
        if set(raw) - {"value", "tags", "requires", "excludes"}:
            raise TemplateError(f"{at}: keys are value, tags, requires and excludes")
        text = raw["value"]
        if not isinstance(text, str) or not text.strip():
            raise TemplateError(f"{at}: value is not text")
        tags = raw.get("tags") or []
        if not isinstance(tags, list) or not all(isinstance(t, str) and t for t in tags):
            raise TemplateError(f"{at}: tags: expected a list of words")
        return Choice(
            text.strip(),
            frozenset(tags),
            _parse_condition(f"{at}.requires", raw.get("requires"), earlier),
            _parse_condition(f"{at}.excludes", raw.get("excludes"), earlier),
        )
    raise TemplateError(f"{where}: value {number} is not text (quote values that contain ': ')")


def _slot(
    where: str,
    name: str,
    kind: str,
    count: int,
    choices: tuple[Choice, ...],
    when_raw: Any,
    rules_raw: Any,
    earlier: dict[str, Slot],
) -> Slot:
    when = _parse_condition(f"{where}.when", when_raw, earlier)
    all_tags = frozenset().union(*(c.tags for c in choices))
    rules: dict[str, tuple[Condition, Condition]] = {}
    if rules_raw is not None:
        if not isinstance(rules_raw, dict):
            raise TemplateError(f"{where}.rules: expected a mapping of tags to requires/excludes")
        for tag, rule in rules_raw.items():
            at = f"{where}.rules.{tag}"
            if tag not in all_tags:
                known = ", ".join(sorted(all_tags)) or "none"
                raise TemplateError(f"{at}: no value has tag '{tag}' (tags: {known})")
            if not isinstance(rule, dict) or not rule or set(rule) - {"requires", "excludes"}:
                raise TemplateError(f"{at}: expected requires and/or excludes")
            rules[str(tag)] = (
                _parse_condition(f"{at}.requires", rule.get("requires"), earlier),
                _parse_condition(f"{at}.excludes", rule.get("excludes"), earlier),
            )
    referenced = {n for n, _ in when}
    for choice in choices:
        requires, excludes = _effective_parts(choice, rules)
        referenced |= {n for n, _ in (*requires, *excludes)}
    matchable = all_tags if kind in GENERATED_KINDS else all_tags | {c.text for c in choices}
    return Slot(name, kind, count, choices, when, rules, tuple(sorted(referenced)), matchable)


def _effective_parts(choice: Choice, rules: dict[str, tuple[Condition, Condition]]):
    requires = list(choice.requires)
    excludes = list(choice.excludes)
    for tag in sorted(choice.tags):
        if tag in rules:
            requires.extend(rules[tag][0])
            excludes.extend(rules[tag][1])
    return tuple(requires), tuple(excludes)


def _effective(slot: Slot, choice: Choice) -> tuple[Condition, Condition]:
    return _effective_parts(choice, slot.rules)


def _rules_for(slot: Slot, tags: frozenset[str]) -> tuple[Condition, Condition]:
    return _effective_parts(Choice("", tags), slot.rules)


def _holds(condition: Condition, marks: dict[str, frozenset[str]]) -> bool:
    return all(marks.get(name, EMPTY) & names for name, names in condition)


def _compatible(
    slot: Slot, marks: dict[str, frozenset[str]]
) -> tuple[tuple[int, ...], list[float]]:
    indices = []
    for i, choice in enumerate(slot.choices):
        requires, excludes = _effective(slot, choice)
        if _holds(requires, marks) and not any(marks.get(n, EMPTY) & ns for n, ns in excludes):
            indices.append(i)
    cumulative = list(itertools.accumulate(slot.choices[i].weight for i in indices))
    return tuple(indices), cumulative


def _check_reachable(path: Path, slots: tuple[Slot, ...]) -> None:
    """Fail at load when some reachable combination of earlier values leaves a slot
    with too few compatible values; only values that conditions refer to are
    enumerated, so the walk stays small."""
    relevant = {n for s in slots for n in s.referenced}
    by_name = {s.name: s for s in slots}
    states: set[tuple[tuple[str, int], ...]] = {()}
    for slot in slots:
        needed = 1 if slot.generated else slot.count
        following: set[tuple[tuple[str, int], ...]] = set()
        for state in states:
            marks = {
                name: (
                    by_name[name].choices[i].marks
                    if not by_name[name].generated
                    else by_name[name].choices[i].tags
                )
                if i >= 0
                else EMPTY
                for name, i in state
            }
            if slot.when and not _holds(slot.when, marks):
                following.add((*state, (slot.name, -1)) if slot.name in relevant else state)
                continue
            indices, _ = _compatible(slot, marks)
            if len(indices) < needed:
                shown = ", ".join(
                    f"{n}={by_name[n].choices[i].text!r}"
                    for n, i in state
                    if i >= 0 and n in slot.referenced
                )
                raise TemplateError(
                    f"{path}: {slot.name}: no compatible value when {shown or 'nothing is chosen'}"
                )
            if slot.name in relevant:
                following.update((*state, (slot.name, i)) for i in indices)
            else:
                following.add(state)
        states = following
        if len(states) > MAX_STATES:
            raise TemplateError(
                f"{path}: {slot.name}: too many combinations of conditional values to check "
                f"(over {MAX_STATES:,}); simplify the rules"
            )


def _template_location(exc: BaseException, template: str) -> str:
    """`file.j2 line N` from the traceback Jinja rewrites to point into templates."""
    location = template
    tb = exc.__traceback__
    while tb is not None:
        filename = tb.tb_frame.f_code.co_filename
        if filename.endswith(".j2"):
            location = f"{Path(filename).name} line {tb.tb_lineno}"
        tb = tb.tb_next
    return f"template {location}"


def _line(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return text[:200] + ("..." if len(text) > 200 else "")


def _upfirst(text: str) -> str:
    """Capitalise a sentence-initial value ("the Quillon scheduler") without lowering the rest."""
    return text[:1].upper() + text[1:]


_UNTIDY = (" \n", "\t\n", "\xa0\n", "\n\n\n", "\r", "\x0b", "\x0c", "\x1c", "\x1d", "\x1e")
_UNTIDY += ("\x85", "\u2028", "\u2029")


def _tidy(text: str) -> str:
    """Collapse the blank-line runs that conditional blocks leave behind."""
    if text == text.strip() and not any(mark in text for mark in _UNTIDY):
        return text  # already tidy: the common case, checked with substring scans
    lines = [line.rstrip() for line in text.strip().splitlines()]
    tidy: list[str] = []
    for line in lines:
        if line or (tidy and tidy[-1]):
            tidy.append(line)
    return "\n".join(tidy)
