"""Seed pools: generators of concrete seeds (AI names, organisations, places, people,
required words) that stay rare at a million documents.

A fixed list of 100 names puts each in 10,000 of a million documents; the corpus
then teaches that AIs are called one of those names. A pool here composes its
values from parts (stems, suffixes, numbers, sectors, forms), so it holds tens
or hundreds of thousands of distinct values, and every draw is a pure function
of the random generator it is handed, so a document's seeds depend only on
(build seed, index).

Each pool is split into variants with tags (`space` settlements, `designation`
names, a `nordic` naming tradition...). Families never tag generated values
themselves; their coherence rules select among variants by tag, and the
sampler in `generator.prompts` picks a compatible variant before asking the pool
for values within it.

The data lives in `lists/seeds/*.yaml` (compositional pools), `lists/people.yaml`
(naming traditions) and `lists/seeds/words.yaml`, found along the template search
path like any list, so a user folder can replace one.
"""

from __future__ import annotations

import bisect
import itertools
import random
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from generator.errors import TemplateError

SLOT = re.compile(r"\{([a-z_]+)(?:\|(upper|title))?\}")
GENERATED_KINDS = ("ai-name", "organization", "place", "person", "word")
DATA_FILES = {
    "ai-name": "seeds/ai-names",
    "organization": "seeds/organizations",
    "place": "seeds/places",
    "person": "people",
    "word": "seeds/words",
}
# Common defaults of small models; a corpus full of them teaches exactly the
# sameness these pools exist to prevent, so no pool may produce one.
BANNED_AI_NAMES = frozenset(
    {
        "aria",
        "nova",
        "atlas",
        "sage",
        "echo",
        "orion",
        "lyra",
        "luna",
        "iris",
        "aurora",
        "astra",
        "nexus",
        "aether",
        "elara",
        "kai",
        "ada",
        "athena",
        "zara",
        "sol",
        "max",
        "ava",
        "jarvis",
        "friday",
        "hal",
        "sophia",
        "eve",
    }
)
MAX_DRAW_TRIES = 64


@dataclass(frozen=True)
class Variant:
    """One tagged part of a pool, drawn with probability proportional to `weight`."""

    name: str
    tags: frozenset[str]
    weight: float


class SeedPool:
    """Values of one kind, in tagged variants; `draw` gives `count` distinct values."""

    kind: str
    variants: tuple[Variant, ...]

    def draw(self, variant: int, rng: random.Random, count: int, taken: set[str]) -> list[str]:
        """`count` distinct values of the variant, none in `taken` (what earlier draws
        of this kind gave the same document), which this adds to."""
        raise NotImplementedError

    def size(self, variant: int) -> int:
        """How many distinct values the variant can give (an upper bound for composed ones)."""
        raise NotImplementedError


@dataclass(frozen=True)
class _Pattern:
    """A format such as "{stem|upper}-{number}" over named parts: one value per
    combination, so its size is the product of its parts' sizes."""

    template: str
    slots: tuple[tuple[str, str | None], ...]
    pieces: tuple[str, ...]
    size: int

    def make(self, parts: dict[str, tuple[Any, ...]], rng: random.Random) -> str:
        rand = rng.random
        out = [self.pieces[0]]
        for (name, case), piece in zip(self.slots, self.pieces[1:], strict=True):
            values = parts[name]
            value = values[int(rand() * len(values))]
            if type(value) is not str:
                value = value.make(parts, rng)
            if case is not None:
                value = value.upper() if case == "upper" else value[:1].upper() + value[1:]
            out.append(value)
            out.append(piece)
        return "".join(out)


class ComposedPool(SeedPool):
    """A pool whose variants each hold patterns over shared and per-variant parts.
    A pattern is drawn in proportion to its number of combinations, so every
    value of a variant is about equally likely, unless the variant gives its
    patterns weights (`{pattern: P, weight: W}`; a bare pattern then weighs 1),
    which keeps a small readable pattern ("{nickname}") from vanishing beside
    a large composed one."""

    def __init__(self, kind: str, data: Any, where: str) -> None:
        self.kind = kind
        if not isinstance(data, dict) or not isinstance(data.get("variants"), dict):
            raise TemplateError(f"{where}: expected 'parts' and 'variants' mappings")
        shared = _parts(data.get("parts") or {}, f"{where}: parts")
        banned = {str(b).lower() for b in data.get("banned") or []}
        variants: list[Variant] = []
        self._parts: list[dict[str, tuple[Any, ...]]] = []
        self._patterns: list[tuple[_Pattern, ...]] = []
        self._cumulative: list[list[float]] = []
        self._banned = banned | (BANNED_AI_NAMES if kind == "ai-name" else frozenset())
        for name, spec in data["variants"].items():
            at = f"{where}: variants.{name}"
            if not isinstance(spec, dict) or not spec.get("patterns"):
                raise TemplateError(f"{at}: expected tags, weight and patterns")
            parts: dict[str, tuple[Any, ...]] = {
                **shared,
                **_parts(spec.get("parts") or {}, f"{at}.parts"),
            }
            parts = _nest(parts, at)
            patterns = []
            weights = []
            explicit = any(not isinstance(raw, str) for raw in spec["patterns"])
            for raw in spec["patterns"]:
                text, weight = (raw, 1.0) if isinstance(raw, str) else _weighted(raw, at)
                pattern = _compile(text, parts, at)
                patterns.append(pattern)
                weights.append(weight if explicit else float(pattern.size))
            tags = frozenset(str(t) for t in spec.get("tags") or [])
            weight = spec.get("weight", 1)
            if not isinstance(weight, (int, float)) or isinstance(weight, bool) or weight <= 0:
                raise TemplateError(f"{at}.weight: expected a positive number")
            variants.append(Variant(str(name), tags, float(weight)))
            self._parts.append(parts)
            self._patterns.append(tuple(patterns))
            self._cumulative.append(list(itertools.accumulate(weights)))
        self.variants = tuple(variants)

    def size(self, variant: int) -> int:
        return sum(p.size for p in self._patterns[variant])

    def draw(self, variant: int, rng: random.Random, count: int, taken: set[str]) -> list[str]:
        patterns, parts = self._patterns[variant], self._parts[variant]
        cumulative = self._cumulative[variant]
        chosen: list[str] = []
        banned = self._banned
        for _ in range(MAX_DRAW_TRIES * count):
            if len(patterns) == 1:
                pattern = patterns[0]
            else:
                at = bisect.bisect(cumulative, rng.random() * cumulative[-1])
                pattern = patterns[min(at, len(patterns) - 1)]
            value = pattern.make(parts, rng)
            if value not in taken and not (banned and value.lower() in banned):
                chosen.append(value)
                taken.add(value)
                if len(chosen) == count:
                    return chosen
        raise TemplateError(f"{self.kind} pool: cannot draw {count} distinct values")


class PeoplePool(SeedPool):
    """Full names within one naming tradition (one variant per tradition), with
    distinct given names, so a document's cast reads like people from one place
    rather than a collage, and no two of them share a first name."""

    kind = "person"

    def __init__(self, data: Any, where: str) -> None:
        if not isinstance(data, dict) or not data:
            raise TemplateError(f"{where}: expected a mapping of naming traditions")
        variants = []
        self._names: list[tuple[tuple[str, ...], tuple[str, ...], bool]] = []
        for name, group in data.items():
            at = f"{where}: {name}"
            if not isinstance(group, dict) or not group.get("given") or not group.get("family"):
                raise TemplateError(f"{at}: a tradition needs given and family names")
            given = _strings(group["given"], f"{at}.given")
            family = _strings(group["family"], f"{at}.family")
            tags = frozenset([str(name), *(str(t) for t in group.get("tags") or [])])
            variants.append(Variant(str(name), tags, float(len(given) * len(family))))
            self._names.append((given, family, bool(group.get("family_first"))))
        self.variants = tuple(variants)

    def size(self, variant: int) -> int:
        given, family, _ = self._names[variant]
        return len(given) * len(family)

    def draw(self, variant: int, rng: random.Random, count: int, taken: set[str]) -> list[str]:
        """`taken` holds the given names already used in the document."""
        given, family, family_first = self._names[variant]
        names: list[str] = []
        for _ in range(MAX_DRAW_TRIES * count):
            first = given[int(rng.random() * len(given))]
            if first in taken:
                continue
            taken.add(first)
            last = family[int(rng.random() * len(family))]
            names.append(f"{last} {first}" if family_first else f"{first} {last}")
            if len(names) == count:
                return names
        raise TemplateError(
            f"person pool: tradition '{self.variants[variant].name}' has too few given names "
            f"for {count} distinct people"
        )


class WordPool(SeedPool):
    """Required words (TinyStories-style), concrete nouns and verbs, distinct per draw."""

    kind = "word"

    def __init__(self, data: Any, where: str) -> None:
        if not isinstance(data, dict) or not data:
            raise TemplateError(f"{where}: expected a mapping of word classes to word lists")
        variants = []
        self._words: list[tuple[str, ...]] = []
        for name, words in data.items():
            values = _strings(words, f"{where}: {name}")
            variants.append(Variant(str(name), frozenset([str(name)]), float(len(values))))
            self._words.append(values)
        self.variants = tuple(variants)

    def size(self, variant: int) -> int:
        return len(self._words[variant])

    def draw(self, variant: int, rng: random.Random, count: int, taken: set[str]) -> list[str]:
        """Words of a multi-word draw come from every class in proportion, so
        "three words" is not three verbs; `variant` names the class of the first."""
        words = self._words
        total = sum(len(w) for w in words)
        chosen: list[str] = []
        for attempt in range(MAX_DRAW_TRIES * count):
            if attempt == 0:
                word = words[variant][int(rng.random() * len(words[variant]))]
            else:
                at = int(rng.random() * total)
                group = 0
                while at >= len(words[group]):
                    at -= len(words[group])
                    group += 1
                word = words[group][at]
            if word not in taken:
                chosen.append(word)
                taken.add(word)
                if len(chosen) == count:
                    return chosen
        raise TemplateError(f"word pool: cannot draw {count} distinct words")


def build_pool(kind: str, load: Callable[[str], tuple[Any, str]]) -> SeedPool:
    """The pool of `kind`, from the data `load(list_name)` returns as (data, file name)."""
    data, where = load(DATA_FILES[kind])
    if kind == "person":
        return PeoplePool(data, where)
    if kind == "word":
        return WordPool(data, where)
    return ComposedPool(kind, data, where)


def _nest(parts: dict[str, tuple[Any, ...]], where: str) -> dict[str, tuple[Any, ...]]:
    """Part values may themselves be patterns over other parts ("the outskirts of
    {town}"), one level deep, so a shared phrasing can serve every variant."""
    flat = {n: v for n, v in parts.items() if not any(SLOT.search(x) for x in v)}
    nested = {}
    for name, values in parts.items():
        if name in flat:
            continue
        try:
            nested[name] = tuple(
                _compile(v, flat, f"{where}: part {name}") if SLOT.search(v) else v for v in values
            )
        except TemplateError:
            continue  # refers to a part this variant lacks; unusable here, and unused
    return {**flat, **nested}


def _parts(raw: Any, where: str) -> dict[str, tuple[str, ...]]:
    if not isinstance(raw, dict):
        raise TemplateError(f"{where}: expected a mapping of part names to lists")
    return {str(name): _strings(values, f"{where}.{name}") for name, values in raw.items()}


def _strings(raw: Any, where: str) -> tuple[str, ...]:
    if not isinstance(raw, list) or not raw:
        raise TemplateError(f"{where}: expected a non-empty list")
    values = []
    for number, value in enumerate(raw, 1):
        if isinstance(value, bool) or not isinstance(value, (str, int)) or not str(value).strip():
            raise TemplateError(f"{where}: value {number} is not text")
        values.append(str(value).strip())
    if len(set(values)) != len(values):
        duplicate = next(v for v in values if values.count(v) > 1)
        raise TemplateError(f"{where}: duplicate value '{duplicate}'")
    return tuple(values)


def _weighted(raw: Any, where: str) -> tuple[str, float]:
    if not isinstance(raw, dict) or not isinstance(raw.get("pattern"), str):
        raise TemplateError(f"{where}: a pattern is a string or {{pattern: ..., weight: N}}")
    weight = raw.get("weight", 1)
    if not isinstance(weight, (int, float)) or isinstance(weight, bool) or weight <= 0:
        raise TemplateError(f"{where}: pattern weight must be a positive number")
    return raw["pattern"], float(weight)


def _compile(text: str, parts: dict[str, tuple[Any, ...]], where: str) -> _Pattern:
    slots = []
    pieces = []
    last = 0
    size = 1
    for match in SLOT.finditer(text):
        name = match.group(1)
        if name not in parts:
            raise TemplateError(f"{where}: pattern '{text}' names unknown part '{name}'")
        pieces.append(text[last : match.start()])
        slots.append((name, match.group(2)))
        size *= sum(v.size if isinstance(v, _Pattern) else 1 for v in parts[name])
        last = match.end()
    pieces.append(text[last:])
    return _Pattern(text, tuple(slots), tuple(pieces), size)
