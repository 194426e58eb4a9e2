"""Mixes: the declarative description of a build.

A mix is a YAML file naming template families with weights, how many documents
to make, the build seed, sampling parameters, filter settings and shard size.
Built-in mixes live in `templates/mixes/`; `--mix` takes one of their names or a
path. Every problem is reported as `FILE: KEY: what is wrong`.

A partial mix must never misfire silently (a mix without `sampling:` once cut
every document at 16 tokens), so a mix states only what differs from a base:

- Required: `families` (name: positive weight) and `documents` (at most
  `MAX_DOCUMENTS`), the two keys that say what to build. A mix with `extends:`
  may omit them too.
- Everything else is optional and comes from the base: the mix named by
  `extends:`, else the built-in `alignment-stories`. `sampling`, `filters`,
  `dedup` and `shards` are merged key by key (`sampling: {temperature: 0.7}`
  keeps the base's `max_tokens`); `families`, `scores` and `judges` name a set
  of things, so a mix that gives one replaces the base's whole set (`judges: {}`
  runs no judge). `seed` comes from the base too.
- Never inherited: `name` (default: the file name; an identifier, since it
  names the default output folder `out/NAME`) and `description`.
- `extends:` names a mix inside a mixes folder (`templates/mixes/` or `mixes/`
  in `--templates`), by name, never by path; chains are followed up to
  `MAX_EXTENDS` deep.
- `sampling` has no `seed`: each document's seed derives from the mix's `seed`.

Mix files are untrusted input: they must be UTF-8, at most `MAX_MIX_BYTES`, and
may not use YAML aliases (an alias bomb expands a small file into gigabytes).
"""

from __future__ import annotations

import dataclasses
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from filters.clean import CleanConfig
from filters.dedup import DedupConfig
from filters.judges import JudgeConfig
from filters.scorers import ScoreConfig
from generator.engines import SamplingParams
from generator.errors import MixError, TemplateError
from generator.prompts import TemplateLibrary, load_yaml
from generator.records import file_sha256
from generator.validators import is_int, is_number
from shards.writer import ShardConfig

BASE_MIX = "alignment-stories"
MAX_DOCUMENTS = 10**10
MAX_SEED = 2**63 - 1
MAX_EXTENDS = 8
MAX_MIX_BYTES = 1024 * 1024
NAME_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,99}")

MERGED_SECTIONS = ("sampling", "steps", "filters", "dedup", "shards")
REPLACED_SECTIONS = ("families", "scores", "judges", "eval_sets")
MIX_KEYS = {
    "name",
    "description",
    "extends",
    "documents",
    "seed",
    *MERGED_SECTIONS,
    *REPLACED_SECTIONS,
}


@dataclass(frozen=True)
class StepsConfig:
    """Which of a family's declared generation steps run (a mix's `steps:`). The document
    step always runs; `idea` writes a one-paragraph premise first, `revise` critiques and
    rewrites the draft. A family that declares no such step simply skips it."""

    idea: bool = True
    revise: bool = True
    idea_max_tokens: int = 256

    def __post_init__(self) -> None:
        for name in ("idea", "revise"):
            if not isinstance(getattr(self, name), bool):
                raise ValueError(
                    f"invalid value {getattr(self, name)!r} for {name} (true or false)"
                )
        if not is_int(self.idea_max_tokens) or not 16 <= self.idea_max_tokens <= 4096:
            raise ValueError(
                f"invalid value {self.idea_max_tokens!r} for idea_max_tokens (16 to 4096)"
            )


@dataclass(frozen=True)
class Mix:
    name: str
    source: str
    sha256: str
    description: str
    documents: int
    seed: int
    families: dict[str, float]
    sampling: SamplingParams
    filters: CleanConfig = field(default_factory=CleanConfig)
    dedup: DedupConfig = field(default_factory=DedupConfig)
    scores: ScoreConfig = field(default_factory=ScoreConfig.default)
    judges: JudgeConfig = field(default_factory=JudgeConfig.default)
    shards: ShardConfig = field(default_factory=ShardConfig)
    steps: StepsConfig = field(default_factory=StepsConfig)
    # Eval sets the leakage gate keeps out of the shards (absolute paths); None: the
    # shipped propensity set; empty: no gate.
    eval_sets: tuple[str, ...] | None = None

    def with_overrides(
        self,
        seed: int | None = None,
        max_tokens: int | None = None,
        dedup: dict[str, Any] | None = None,
    ) -> Mix:
        """Apply command-line overrides; the result is what the manifest records."""
        mix = self
        if seed is not None:
            if not is_int(seed) or not 0 <= seed <= MAX_SEED:
                raise MixError(f"--seed: expected an integer from 0 to 2**63-1, got {seed!r}")
            mix = dataclasses.replace(mix, seed=seed)
        try:
            if max_tokens is not None:
                sampling = dataclasses.replace(mix.sampling, max_tokens=max_tokens)
                mix = dataclasses.replace(mix, sampling=sampling)
            changes = {k: v for k, v in (dedup or {}).items() if v is not None}
            if changes:
                mix = dataclasses.replace(mix, dedup=dataclasses.replace(mix.dedup, **changes))
        except ValueError as exc:
            raise MixError(f"command line: {exc}") from None
        return mix

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "documents": self.documents,
            "seed": self.seed,
            "families": dict(self.families),
            "sampling": self.sampling.to_dict(),
            "steps": dataclasses.asdict(self.steps),
            "filters": dataclasses.asdict(self.filters),
            "dedup": dataclasses.asdict(self.dedup),
            "scores": dict(sorted(self.scores.minimums.items())),
            "judges": dict(sorted(self.judges.minimums.items())),
            "shards": dataclasses.asdict(self.shards),
            "eval_sets": None if self.eval_sets is None else list(self.eval_sets),
        }


def builtin_mix_names(library: TemplateLibrary) -> list[str]:
    return sorted({p.stem for d in library.search_path for p in (d / "mixes").glob("*.yaml")})


def resolve_mix_path(ref: str, library: TemplateLibrary) -> Path:
    """A mix is a path if one exists there or it looks like a file name, else a built-in name."""
    path = Path(ref)
    if path.suffix in {".yaml", ".yml"} or path.exists():
        return path
    found = _find_in_mixes_folders(ref, library) if NAME_PATTERN.fullmatch(ref) else None
    if found is not None:
        return found
    known = ", ".join(builtin_mix_names(library)) or "none"
    raise MixError(f"unknown mix '{ref}' (built-in mixes: {known}; or pass a path to a YAML file)")


def load_mix(ref: str, library: TemplateLibrary) -> Mix:
    path = resolve_mix_path(ref, library)
    data, chain = _resolved_data(path, library)
    name = data.get("name", path.stem)
    if not isinstance(name, str) or not NAME_PATTERN.fullmatch(name):
        origin = "" if "name" in data else " (taken from the file name; set name: in the mix)"
        raise MixError(
            f"{path}: name: expected an identifier (letters, digits, '.', '_', '-'; "
            f"not starting with '.' or '-'; at most 100 characters), got {_short(name)}{origin}"
        )
    description = data.get("description")
    if description is not None and not isinstance(description, str):
        raise MixError(f"{path}: description: expected text, got {_short(description)}")

    documents = data["documents"]
    if not is_int(documents) or documents < 1:
        raise MixError(
            f"{_origin(chain, 'documents')}: documents: expected a positive integer, "
            f"got {_short(documents)}"
        )
    if documents > MAX_DOCUMENTS:
        raise MixError(
            f"{_origin(chain, 'documents')}: documents: at most 10**10 per mix, "
            f"got {_short(documents)}"
        )
    seed = data.get("seed", 0)
    if not is_int(seed) or not 0 <= seed <= MAX_SEED:
        raise MixError(
            f"{_origin(chain, 'seed')}: seed: expected an integer from 0 to 2**63-1, "
            f"got {_short(seed)}"
        )

    return Mix(
        name=name,
        source=ref,
        sha256=file_sha256(path),
        description=(description or "").strip(),
        documents=documents,
        seed=seed,
        families=_families(_origin(chain, "families"), data["families"], library),
        sampling=_section(chain, "sampling", data.get("sampling"), SamplingParams),
        filters=_section(chain, "filters", data.get("filters"), CleanConfig),
        dedup=_section(chain, "dedup", data.get("dedup"), DedupConfig),
        scores=_minimums(_origin(chain, "scores"), "scores", data.get("scores"), ScoreConfig),
        judges=_minimums(_origin(chain, "judges"), "judges", data.get("judges"), JudgeConfig),
        shards=_section(chain, "shards", data.get("shards"), ShardConfig),
        steps=_section(chain, "steps", data.get("steps"), StepsConfig),
        eval_sets=_eval_sets(_origin(chain, "eval_sets"), data.get("eval_sets")),
    )


def _eval_sets(path: Path, raw: Any) -> tuple[str, ...] | None:
    """`eval_sets:` a list of JSONL files of eval items, relative to the mix file, that
    no training document may contain (the leakage gate); absent: the shipped set."""
    if raw is None:
        return None
    if not isinstance(raw, list) or not all(isinstance(item, str) and item for item in raw):
        raise MixError(f"{path}: eval_sets: expected a list of file paths, got {_short(raw)}")
    resolved = []
    for item in raw:
        target = (path.parent / item).resolve()
        if not target.is_file():
            raise MixError(f"{path}: eval_sets: {item}: file not found")
        resolved.append(str(target))
    return tuple(resolved)


# -- reading and merging -----------------------------------------------------------


def _resolved_data(path: Path, library: TemplateLibrary) -> tuple[dict[str, Any], list[Layer]]:
    """The mix's own keys over its base's, and the chain of files from the mix to the
    last base (so an error names the file a bad value came from)."""
    chain: list[Layer] = []
    seen: set[Path] = set()
    current: Path | None = path
    while current is not None:
        key = current.resolve()
        if key in seen:
            names = " -> ".join(str(layer.path) for layer in chain)
            raise MixError(f"{chain[0].path}: extends: loops back ({names} -> {current})")
        seen.add(key)
        if len(chain) > MAX_EXTENDS:
            raise MixError(f"{chain[0].path}: extends: more than {MAX_EXTENDS} mixes deep")
        layer = Layer(current, _read_mix_file(current))
        chain.append(layer)
        current = _base_path(layer, library)
    own, bases = chain[0].data, chain[1:]
    if not chain[0].extends_given:
        for key in ("families", "documents"):
            if key not in own:
                raise MixError(
                    f"{path}: missing key '{key}' (required unless the mix has extends:; "
                    f"other keys default to the built-in {BASE_MIX} mix)"
                )
    merged: dict[str, Any] = {}
    for layer in reversed(bases):
        merged = _merge(merged, layer.data, layer.path, inherit=True)
    return _merge(merged, own, path, inherit=False), chain


@dataclass(frozen=True)
class Layer:
    path: Path
    data: dict[str, Any]

    @property
    def extends_given(self) -> bool:
        return self.data.get("extends") is not None


def _base_path(layer: Layer, library: TemplateLibrary) -> Path | None:
    """The mix `layer` extends: its `extends:`, else the built-in base (which has none)."""
    ref = layer.data.get("extends")
    if ref is None:
        if layer.path.resolve() == _builtin_base(library).resolve():
            return None
        return _builtin_base(library)
    if not isinstance(ref, str):
        raise MixError(f"{layer.path}: extends: expected a mix name, got {_short(ref)}")
    name = ref.removesuffix(".yaml")
    if not NAME_PATTERN.fullmatch(name):
        raise MixError(
            f"{layer.path}: extends: expected the name of a mix in a mixes folder "
            f"(no paths), got {_short(ref)}"
        )
    found = _find_in_mixes_folders(name, library)
    if found is None:
        known = ", ".join(builtin_mix_names(library)) or "none"
        raise MixError(f"{layer.path}: extends: unknown mix '{name}' (mixes: {known})")
    return found


def _builtin_base(library: TemplateLibrary) -> Path:
    """The built-in base mix, from the built-in folder only (a user folder cannot replace it)."""
    return library.search_path[-1] / "mixes" / f"{BASE_MIX}.yaml"


def _find_in_mixes_folders(name: str, library: TemplateLibrary) -> Path | None:
    """`name`.yaml inside a mixes folder; a symlink that leads outside it does not count."""
    for root in library.search_path:
        folder = root / "mixes"
        candidate = folder / f"{name}.yaml"
        if candidate.is_file() and candidate.resolve().is_relative_to(folder.resolve()):
            return candidate
    return None


def _merge(base: dict[str, Any], own: dict[str, Any], path: Path, inherit: bool) -> dict[str, Any]:
    """`own` over `base`: settings sections key by key, named sets whole. A base's name
    and description are not inherited."""
    merged = {k: v for k, v in base.items() if k not in {"name", "description", "extends"}}
    for key, value in own.items():
        if inherit and key in {"name", "description"}:
            continue
        if value is None:  # `sampling:` with nothing under it: keep the base's
            continue
        if key in MERGED_SECTIONS:
            if not isinstance(value, dict):
                raise MixError(f"{path}: {key}: expected a mapping, got {_short(value)}")
            merged[key] = {**merged.get(key, {}), **value}
        else:
            merged[key] = value
    return merged


def _read_mix_file(path: Path) -> dict[str, Any]:
    """Parse one mix file, checking what YAML itself does not: encoding, size, aliases,
    nesting depth, key names."""
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise MixError(f"{path}: file not found") from None
    except IsADirectoryError:
        raise MixError(f"{path}: is a folder, not a mix file") from None
    except OSError as exc:
        raise MixError(f"{path}: cannot read: {exc.strerror}") from None
    if len(raw) > MAX_MIX_BYTES:
        raise MixError(f"{path}: {len(raw):,} bytes; a mix file may have at most 1 MiB")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise MixError(f"{path}: not UTF-8 text (invalid byte at offset {exc.start})") from None
    _refuse_aliases(path, text)
    try:
        data = load_yaml(path, MixError)
    except RecursionError:
        raise MixError(f"{path}: invalid YAML: nested too deeply") from None
    if not isinstance(data, dict):
        raise MixError(f"{path}: expected a mapping at the top level, got {_kind(data)}")
    unknown = sorted((k for k in data if k not in MIX_KEYS), key=str)
    if unknown:
        raise MixError(
            f"{path}: unknown key {_short(unknown[0])} (allowed: {', '.join(sorted(MIX_KEYS))})"
        )
    sampling = data.get("sampling")
    if isinstance(sampling, dict) and "seed" in sampling:
        raise MixError(
            f"{path}: sampling.seed: not allowed: each document's seed derives from the "
            f"mix's top-level seed (set seed: there, or --seed)"
        )
    return data


def _refuse_aliases(path: Path, text: str) -> None:
    """A mix has no use for anchors and aliases, and aliases are how a few hundred bytes
    of YAML expand into gigabytes; refuse them before anything is built."""
    try:
        for token in yaml.scan(text, Loader=yaml.SafeLoader):
            if isinstance(token, (yaml.AliasToken, yaml.AnchorToken)):
                line = token.start_mark.line + 1
                raise MixError(f"{path}: line {line}: YAML anchors and aliases are not allowed")
    except yaml.YAMLError:
        return  # malformed YAML: the parser reports it with its line


# -- sections ------------------------------------------------------------------


def _families(path: Path, raw: Any, library: TemplateLibrary) -> dict[str, float]:
    if not isinstance(raw, dict) or not raw:
        raise MixError(f"{path}: families: expected a mapping of family names to weights")
    families: dict[str, float] = {}
    for name, weight in raw.items():
        if not isinstance(name, str) or not NAME_PATTERN.fullmatch(name):
            raise MixError(f"{path}: families: {_short(name)} is not a family name")
        try:
            library.family(name)
        except TemplateError as exc:
            raise MixError(f"{path}: families.{name}: {exc}") from None
        if not is_number(weight) or weight <= 0:
            raise MixError(
                f"{path}: families.{name}: weight must be a positive number, got {_short(weight)}"
            )
        families[name] = float(weight)
    if not math.isfinite(sum(families.values())):
        raise MixError(
            f"{path}: families: the weights add up to more than the largest number "
            f"(only their ratios matter: use smaller numbers)"
        )
    return families


def _minimums(path: Path, key: str, raw: Any, cls: type) -> Any:
    """`scores:` and `judges:` map names to the minimum each must reach (null: score only)."""
    if raw is None:
        return cls.default()
    if not isinstance(raw, dict):
        raise MixError(f"{path}: {key}: expected a mapping of names to minimums")
    try:
        return cls.parse(raw)
    except ValueError as exc:
        raise MixError(f"{path}: {key}: {exc}") from None


def _section(chain: list[Layer], key: str, raw: Any, cls: type) -> Any:
    """Build a frozen config dataclass from a mapping, naming the bad key and the file
    it came from on failure."""
    if raw is None:
        return cls()
    allowed = [f.name for f in dataclasses.fields(cls)]
    for name in raw:
        if name not in allowed:
            raise MixError(
                f"{_origin(chain, key, name)}: {key}.{_label(name)}: unknown key "
                f"(allowed: {', '.join(allowed)})"
            )
    try:
        return cls(**raw)
    except (TypeError, ValueError) as exc:
        bad = next((n for n in raw if f" for {n}" in str(exc)), None)
        raise MixError(f"{_origin(chain, key, bad)}: {key}: {exc}") from None


def _origin(chain: list[Layer], key: str, subkey: Any = None) -> Path:
    """The first file along the chain that sets `key` (or `key.subkey`)."""
    for layer in chain:
        value = layer.data.get(key)
        if value is None:
            continue
        if subkey is None or (isinstance(value, dict) and subkey in value):
            return layer.path
    return chain[0].path


def _label(key: Any) -> str:
    return key if isinstance(key, str) and key.isprintable() and len(key) <= 60 else _short(key)


def _kind(value: Any) -> str:
    return "nothing" if value is None else f"a {type(value).__name__}"


def _short(value: Any, limit: int = 60) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[:limit] + "..."
