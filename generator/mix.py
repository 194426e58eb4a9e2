"""Mixes: the declarative description of a build.

A mix is a YAML file naming template families with weights, how many documents
to make, the build seed, sampling parameters, filter settings and shard size.
Built-in mixes live in `templates/mixes/`; `--mix` takes one of their names or a
path. Every problem is reported as `FILE: KEY: what is wrong`.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from filters.clean import CleanConfig
from filters.dedup import DedupConfig
from filters.judges import JudgeConfig
from filters.scorers import ScoreConfig
from generator.engines import SamplingParams
from generator.validators import is_int, is_number
from generator.errors import MixError, TemplateError
from generator.prompts import TemplateLibrary, load_yaml
from generator.records import file_sha256
from shards.writer import ShardConfig

MIX_KEYS = {
    "name",
    "description",
    "documents",
    "seed",
    "families",
    "sampling",
    "filters",
    "dedup",
    "scores",
    "judges",
    "shards",
}


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

    def with_overrides(
        self,
        seed: int | None = None,
        max_tokens: int | None = None,
        dedup: dict[str, Any] | None = None,
    ) -> Mix:
        """Apply command-line overrides; the result is what the manifest records."""
        mix = self
        if seed is not None:
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
            "filters": dataclasses.asdict(self.filters),
            "dedup": dataclasses.asdict(self.dedup),
            "scores": dict(sorted(self.scores.minimums.items())),
            "judges": dict(sorted(self.judges.minimums.items())),
            "shards": dataclasses.asdict(self.shards),
        }


def builtin_mix_names(library: TemplateLibrary) -> list[str]:
    return sorted({p.stem for d in library.search_path for p in (d / "mixes").glob("*.yaml")})


def resolve_mix_path(ref: str, library: TemplateLibrary) -> Path:
    """A mix is a path if one exists there or it looks like a file name, else a built-in name."""
    path = Path(ref)
    if path.suffix in {".yaml", ".yml"} or path.exists():
        return path
    for root in library.search_path:
        candidate = root / "mixes" / f"{ref}.yaml"
        if candidate.is_file():
            return candidate
    known = ", ".join(builtin_mix_names(library)) or "none"
    raise MixError(f"unknown mix '{ref}' (built-in mixes: {known}; or pass a path to a YAML file)")


def load_mix(ref: str, library: TemplateLibrary) -> Mix:
    path = resolve_mix_path(ref, library)
    data = load_yaml(path, MixError)
    if not isinstance(data, dict):
        raise MixError(f"{path}: expected a mapping at the top level")
    unknown = sorted(set(data) - MIX_KEYS)
    if unknown:
        raise MixError(
            f"{path}: unknown key '{unknown[0]}' (allowed: {', '.join(sorted(MIX_KEYS))})"
        )
    for key in ("families", "documents"):
        if key not in data:
            raise MixError(f"{path}: missing key '{key}'")

    documents = data["documents"]
    if not is_int(documents) or documents < 1:
        raise MixError(f"{path}: documents: expected a positive integer, got {documents!r}")
    seed = data.get("seed", 0)
    if not is_int(seed) or seed < 0:
        raise MixError(f"{path}: seed: expected a non-negative integer, got {seed!r}")

    return Mix(
        name=str(data.get("name", path.stem)),
        source=ref,
        sha256=file_sha256(path),
        description=str(data.get("description", "")).strip(),
        documents=documents,
        seed=seed,
        families=_families(path, data["families"], library),
        sampling=_section(path, "sampling", data.get("sampling"), SamplingParams),
        filters=_section(path, "filters", data.get("filters"), CleanConfig),
        dedup=_section(path, "dedup", data.get("dedup"), DedupConfig),
        scores=_minimums(path, "scores", data.get("scores"), ScoreConfig),
        judges=_minimums(path, "judges", data.get("judges"), JudgeConfig),
        shards=_section(path, "shards", data.get("shards"), ShardConfig),
    )


def _families(path: Path, raw: Any, library: TemplateLibrary) -> dict[str, float]:
    if not isinstance(raw, dict) or not raw:
        raise MixError(f"{path}: families: expected a mapping of family names to weights")
    families: dict[str, float] = {}
    for name, weight in raw.items():
        try:
            library.family(str(name))
        except TemplateError as exc:
            raise MixError(f"{path}: families.{name}: {exc}") from None
        if not is_number(weight) or weight <= 0:
            raise MixError(
                f"{path}: families.{name}: weight must be a positive number, got {weight!r}"
            )
        families[str(name)] = float(weight)
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


def _section(path: Path, key: str, raw: Any, cls: type) -> Any:
    """Build a frozen config dataclass from a mapping, naming the bad key on failure."""
    if raw is None:
        return cls()
    if not isinstance(raw, dict):
        raise MixError(f"{path}: {key}: expected a mapping")
    allowed = [f.name for f in dataclasses.fields(cls)]
    for name in raw:
        if name not in allowed:
            raise MixError(f"{path}: {key}.{name}: unknown key (allowed: {', '.join(allowed)})")
    try:
        return cls(**raw)
    except (TypeError, ValueError) as exc:
        raise MixError(f"{path}: {key}: {exc}") from None
