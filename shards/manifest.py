"""The build manifest, read and written in one place.

`manifest.json` is written last by a build's merge, so its presence means the
build is complete. It stays a plain JSON object on disk (readable by any tool),
but every reader and writer in this project goes through `Manifest`, which
checks the fields it needs and their types, so an edited or truncated manifest
is one clear error instead of a KeyError three modules away.
"""

from __future__ import annotations

import json
from dataclasses import MISSING, asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from generator.errors import ShardError

MANIFEST = "manifest.json"
MANIFEST_FORMAT = "alignment-datagen/manifest@2"
READABLE_FORMATS = {"alignment-datagen/manifest@1", MANIFEST_FORMAT}


@dataclass(frozen=True)
class ShardEntry:
    """One shard file: its path relative to the build folder, rows, bytes and sha256."""

    path: str
    rows: int
    bytes: int
    sha256: str


@dataclass(frozen=True)
class Manifest:
    format: str
    package_version: str
    mix: dict[str, Any]
    config: dict[str, Any]
    config_hash: str
    generation_key: str
    seed: int
    engine: str
    model: dict[str, Any]
    templates: dict[str, str]
    counts: dict[str, Any]
    stages: list[dict[str, Any]]
    documents_per_family: dict[str, int]
    tokens: dict[str, Any]
    shards: list[ShardEntry]
    diversity: dict[str, Any] = field(default_factory=dict)
    judges: dict[str, Any] = field(default_factory=dict)
    dropped_shards: list[ShardEntry] = field(default_factory=list)
    near_duplicates: dict[str, Any] | None = None
    leakage: dict[str, Any] | None = None
    reproducibility: dict[str, Any] | None = None
    # How the build ran: not part of what the shards depend on, so two builds of the
    # same configuration on different executors compare equal apart from these.
    execution: dict[str, Any] = field(default_factory=dict)

    @property
    def rows(self) -> int:
        return sum(shard.rows for shard in self.shards)

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        return {key: value for key, value in data.items() if value is not None}

    @classmethod
    def from_dict(cls, data: Any, source: str = MANIFEST) -> Manifest:
        if not isinstance(data, dict):
            raise ShardError(f"{source}: not a manifest (expected a JSON object)")
        if data.get("format") not in READABLE_FORMATS:
            raise ShardError(
                f"{source}: unknown manifest format {data.get('format')!r} "
                f"(this version reads {', '.join(sorted(READABLE_FORMATS))})"
            )
        values: dict[str, Any] = {}
        for f in fields(cls):
            name = f.name
            if name not in data:
                if f.default is MISSING and f.default_factory is MISSING:
                    raise ShardError(f"{source}: manifest has no '{name}'")
                continue
            values[name] = data[name]
        try:
            values["shards"] = [_shard(s, source) for s in values["shards"]]
            values["dropped_shards"] = [_shard(s, source) for s in values.get("dropped_shards", [])]
            for name in ("mix", "config", "model", "templates", "counts", "tokens"):
                if not isinstance(values[name], dict):
                    raise ShardError(f"{source}: '{name}' is not an object")
            return cls(**values)
        except TypeError as exc:
            raise ShardError(f"{source}: malformed manifest ({exc})") from None


def _shard(raw: Any, source: str) -> ShardEntry:
    ok = (
        isinstance(raw, dict)
        and isinstance(raw.get("path"), str)
        and all(isinstance(raw.get(k), int) and raw[k] >= 0 for k in ("rows", "bytes"))
        and isinstance(raw.get("sha256"), str)
    )
    path = raw.get("path") if isinstance(raw, dict) else None
    if not ok or "/" in str(path).replace("dropped/", "", 1) or str(path).startswith("."):
        raise ShardError(f"{source}: malformed shard entry {raw!r:.120}")
    return ShardEntry(raw["path"], raw["rows"], raw["bytes"], raw["sha256"])


def read_manifest(path: Path) -> Manifest:
    """Read `path` (a manifest.json or the build folder holding one)."""
    if path.is_dir():
        path = path / MANIFEST
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ShardError(f"{path}: no manifest (the build has not finished)") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, RecursionError) as exc:
        raise ShardError(f"{path}: unreadable manifest ({exc})") from None
    return Manifest.from_dict(data, str(path))


def manifest_exists(folder: Path) -> bool:
    return (folder / MANIFEST).is_file()
