"""A build: its specification, its identity, and how it runs in one process.

A build is plan -> tasks -> merge. Planning is free (every document is a pure
function of mix, templates, seed and index). Task `rank` of `world_size`
(`generator/task.py`) generates, cleans, scores, judges and MinHashes the
chunks the fixed chunk grid gives it, checkpointing each chunk. The merge
(`generator/merge.py`) reads every task's checkpoints in index order, removes
exact and near duplicates across all of them, applies the thresholds, and
writes the shards and the manifest. Executors (`generator/executors/`) only
decide where tasks run; `generator.run.run_build` runs one task and the merge here.

So a build split into any number of tasks, killed and resumed anywhere, gives
the same shards as one process: the tasks' work depends only on indices, and
the merge's order is the index order.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from filters.decontam import DecontamConfig
from filters.judges import RUBRICS
from generator import __version__
from generator.checkpoints import (
    WORK,
    claim_folder,
    read_json,
    require_owned,
)
from generator.engines import Engine, EngineConfig, create_engine
from generator.errors import BuildError, GenError
from generator.mix import Mix, load_mix
from generator.progress import PrintNotes, Progress
from generator.prompts import Planner, TemplateLibrary, builtin_templates_dir, derive_seed
from generator.records import Document, file_sha256
from shards.manifest import MANIFEST, read_manifest
from shards.writer import write_json_atomic

SPEC = "build.json"
STATE = "state.json"
BUNDLED_JUDGE_NOTE = (
    "note: the bundled 135M model cannot judge (it scores 0.21 on the labelled passages); "
    "judges are off for this build. Ask for them with --judges alignment, or judge with a "
    "real model: --judge-engine openai --base-url ... or --judge-engine vllm --judge-model ..."
)


@dataclass(frozen=True)
class BuildSpec:
    """Everything a task or the merge needs to rebuild the build in another process,
    stored as `OUT/.work/build.json`. Paths are absolute."""

    mix: str
    templates_dir: str | None = None
    limit: int | None = None
    seed: int | None = None
    max_tokens: int | None = None
    dedup: dict[str, Any] = field(default_factory=dict)
    engine: dict[str, Any] = field(default_factory=dict)
    judge_engine: dict[str, Any] | None = None
    judges: str | None = None
    decontaminate: str | None = None
    decontaminate_ngram: int = 13
    chunk_size: int | None = None

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def load(cls, out: Path) -> BuildSpec:
        require_owned(out)
        data = read_json(out / WORK / SPEC)
        if not isinstance(data, dict):
            raise BuildError(f"{out / WORK / SPEC}: missing or unreadable build spec")
        try:
            return cls(**data)
        except TypeError as exc:
            raise BuildError(f"{out / WORK / SPEC}: malformed build spec ({exc})") from None


@dataclass(frozen=True)
class BuildResult:
    manifest: dict[str, Any]
    generated_now: int
    already_complete: bool


def plan_document(mix: Mix, library: TemplateLibrary, index: int) -> Document:
    """Everything about document `index` except its text: family, axes, prompt, seed.
    (One document; a build plans through `Build.planner`, which loads everything once.)"""
    return planned_document(Planner(library, mix.families, mix.seed), mix.seed, index)[0]


def planned_document(planner: Planner, seed: int, index: int) -> tuple[Document, str]:
    """Document `index` as planned, and the system message of its family."""
    rendered = planner.plan(index)
    document = Document(
        index=index,
        family=rendered.family,
        template=rendered.template,
        axes=rendered.axes,
        prompt=rendered.prompt,
        seed=derive_seed("generate", seed, index) % (2**31),
    )
    return document, rendered.system


@dataclass
class Build:
    """One build's resolved configuration and folder. Engines are created on first use,
    so the merge (which never calls a model) never loads one."""

    mix: Mix
    library: TemplateLibrary
    out: Path
    engine_config: EngineConfig = field(default_factory=EngineConfig)
    limit: int | None = None
    chunk_size: int | None = None
    decontaminate: DecontamConfig | None = None
    judge_engine_config: EngineConfig | None = None
    judges: str | None = None
    engine_instance: Engine | None = None
    judge_engine_instance: Engine | None = None
    progress: Progress = field(default_factory=PrintNotes)
    warn: Callable[[str], None] | None = None
    spec: BuildSpec | None = None

    def __post_init__(self) -> None:
        self.work = self.out / WORK
        self.chunks = self.work / "chunks"
        self.documents = min(self.mix.documents, self.limit or self.mix.documents)
        if self.warn is None:
            self.warn = self.progress.note

    # -- engines --------------------------------------------------------------------

    @cached_property
    def engine(self) -> Engine:
        return self.engine_instance or create_engine(self.engine_config)

    @cached_property
    def judge_engine(self) -> Engine:
        if self.judge_engine_instance is not None:
            return self.judge_engine_instance
        if self.judge_engine_config is None:
            return self.engine
        return create_engine(self.judge_engine_config)

    def close(self) -> None:
        for name in ("judge_engine", "engine"):
            engine = self.__dict__.pop(name, None)
            if engine is not None:
                engine.close()

    @cached_property
    def active_judges(self) -> dict[str, float | None]:
        """The judges this build runs: the mix's, or `--judges`; none on the bundled model
        unless asked for by name, since it cannot judge and validation costs minutes."""
        if self.judges == "none":
            return {}
        if self.judges:
            names = [n.strip() for n in self.judges.split(",") if n.strip()]
            unknown = [n for n in names if n not in RUBRICS]
            if unknown:
                known = ", ".join(sorted(RUBRICS))
                raise BuildError(f"--judges: unknown judge '{unknown[0]}' (known: {known})")
            return {n: self.mix.judges.minimums.get(n) for n in names}
        minimums = dict(self.mix.judges.minimums)
        if minimums and self._judge_is_bundled():
            self.warn(BUNDLED_JUDGE_NOTE)
            return {}
        return minimums

    def _judge_is_bundled(self) -> bool:
        config = self.judge_engine_config or self.engine_config
        if self.judge_engine_instance is not None or self.engine_instance is not None:
            engine = self.judge_engine_instance or self.engine_instance
            return engine.name == "llamacpp" and engine.model.name.startswith("SmolLM2-135M")
        return config.kind in ("auto", "llamacpp") and config.model is None

    @cached_property
    def planner(self) -> Planner:
        return Planner(self.library, self.mix.families, self.mix.seed)

    # -- identity -------------------------------------------------------------------

    def resolved_chunk_size(self) -> int:
        return self.chunk_size or self.engine.default_chunk_size

    def generation_key(self) -> str:
        """What each document's text depends on; checkpoints are valid only under it."""
        return digest(
            {
                "families": self.mix.families,
                "seed": self.mix.seed,
                "sampling": self.mix.sampling.to_dict(),
                "steps": dataclasses.asdict(self.mix.steps),
                "templates": self.library.fingerprint(self.mix.families),
                "engine": self.engine.name,
                "model": [self.engine.model.name, self.engine.model.sha256],
            }
        )

    def processing_key(self) -> str:
        """What a task's per-chunk processing depends on (cleaning, the scorers, the
        MinHash shingles and permutations, the judges and their model); thresholds are
        applied by the merge, so changing one never reprocesses a chunk."""
        judges = sorted(self.active_judges)
        judge = self.judge_engine if judges else None
        return digest(
            {
                "filters": dataclasses.asdict(self.mix.filters),
                "scores": sorted(self.mix.scores.minimums),
                "minhash": [self.mix.dedup.ngram, self.mix.dedup.num_perm],
                "judges": [f"{n}@{RUBRICS[n].version}" for n in judges],
                "judge_model": [judge.name, judge.model.name, judge.model.sha256]
                if judge
                else None,
                "package": __version__,
            }
        )[:16]

    def eval_sets(self) -> list[Path]:
        """The eval sets the leakage gate checks: the mix's `eval_sets:`, else the shipped
        propensity set."""
        if self.mix.eval_sets is None:
            return [Path(str(builtin_templates_dir())) / "evals" / "propensity.jsonl"]
        return [Path(p) for p in self.mix.eval_sets]

    def resolved_config(self) -> dict[str, Any]:
        config = self.mix.to_dict()
        config["documents"] = self.documents
        config["eval_sets"] = [{"file": p.name, "sha256": file_sha256(p)} for p in self.eval_sets()]
        config["judges"] = dict(sorted(self.active_judges.items()))
        if self.decontaminate is not None:
            config["decontaminate"] = self.decontaminate.describe()
        return config

    # -- preparing the folder ----------------------------------------------------------

    def validate(self) -> None:
        """Everything that can be wrong with the input fails here, before any write:
        templates render for a sample of indices, the model file opens, the eval files
        for decontamination parse, the judges exist."""
        for index in range(min(self.documents, 8)):
            plan_document(self.mix, self.library, index)
        if self.decontaminate is not None:
            from filters.decontam import Decontaminate

            Decontaminate(self.decontaminate)
        validate_model = getattr(self.engine, "validate", None)
        if validate_model is not None:
            validate_model()
        self.active_judges  # noqa: B018 - raises on an unknown judge name

    def prepare(self) -> dict[str, Any]:
        """Validate, claim the folder, and record the spec and the generation state that
        every task and the merge check themselves against. Returns the state."""
        self.validate()
        generation_key = self.generation_key()  # renders templates, hashes the model
        state = {
            "generation_key": generation_key,
            "processing_key": self.processing_key(),
            "config_hash": digest({"generation": generation_key, "config": self.resolved_config()}),
            "engine": self.engine.name,
            "model": {"name": self.engine.model.name, "sha256": self.engine.model.sha256},
            "documents": self.documents,
            "chunk_size": self.resolved_chunk_size(),
        }
        claim_folder(self.out)
        existing = read_json(self.work / STATE)
        if existing is not None and (
            not isinstance(existing, dict) or existing.get("generation_key") != generation_key
        ):
            raise BuildError(
                f"{self.out}: holds a build with a different mix, templates, seed, sampling "
                "or model; choose another --out or delete the folder"
            )
        if existing and existing.get("chunk_size") and self.chunk_size is None:
            state["chunk_size"] = existing["chunk_size"]  # keep the grid a resumed build began
        self.chunk_size = state["chunk_size"]
        if self.spec is not None:
            spec = dataclasses.replace(self.spec, chunk_size=state["chunk_size"])
            _write_if_changed(self.work / SPEC, spec.to_dict())
        _write_if_changed(self.work / STATE, state)
        self.state = state
        return state

    def complete_manifest(self) -> dict[str, Any] | None:
        """The manifest of a finished build of exactly this configuration, if there is one."""
        path = self.out / MANIFEST
        if not path.is_file():
            return None
        try:
            manifest = read_manifest(path)
        except GenError:
            return None
        if manifest.config_hash != self.state["config_hash"]:
            return None
        return manifest.to_dict()

    # -- from a folder ------------------------------------------------------------------

    @classmethod
    def from_spec(cls, spec: BuildSpec, out: Path, progress: Progress | None = None) -> Build:
        library = TemplateLibrary(Path(spec.templates_dir) if spec.templates_dir else None)
        mix = load_mix(spec.mix, library).with_overrides(
            seed=spec.seed, max_tokens=spec.max_tokens, dedup=spec.dedup
        )
        engine_config = EngineConfig(**spec.engine)
        workers = os.environ.get("GEN_WORKERS")
        if workers and engine_config.workers is None and workers.isdigit():
            engine_config = dataclasses.replace(engine_config, workers=int(workers))
        return cls(
            mix=mix,
            library=library,
            out=out,
            engine_config=engine_config,
            limit=spec.limit,
            chunk_size=spec.chunk_size,
            decontaminate=DecontamConfig(Path(spec.decontaminate), spec.decontaminate_ngram)
            if spec.decontaminate
            else None,
            judge_engine_config=EngineConfig(**spec.judge_engine) if spec.judge_engine else None,
            judges=spec.judges,
            progress=progress or PrintNotes(),
            spec=spec,
        )

    @classmethod
    def from_folder(cls, out: Path, progress: Progress | None = None) -> Build:
        """The build recorded in `out` (by `gen build` before any task ran)."""
        build = cls.from_spec(BuildSpec.load(out), out, progress)
        state = read_json(build.work / STATE)
        if not isinstance(state, dict) or "generation_key" not in state:
            raise BuildError(f"{build.work / STATE}: missing or unreadable build state")
        build.state = state
        build.chunk_size = state["chunk_size"]
        return build


def _write_if_changed(path: Path, data: dict[str, Any]) -> None:
    """Rewrite a record only when it changes, so re-running a finished build touches nothing."""
    if read_json(path) != json.loads(json.dumps(data)):
        write_json_atomic(path, data)


def reproducibility(engine: Engine) -> dict[str, Any]:
    """What the engine promises about a document's text across chunk sizes, kills and
    resumes; recorded in the manifest and said by `gen build`. Asked after generation:
    vLLM knows whether its batch-invariant mode took effect only once it runs."""
    report = getattr(engine, "reproducibility", None)
    if callable(report):
        report = report()
    if isinstance(report, dict):
        return report
    if engine.name == "llamacpp":
        return {
            "mode": "per-document seed, fixed prompt evaluation",
            "guarantee": "same text for any chunk size, task count, worker count, kill and "
            "resume (tested)",
        }
    return {
        "mode": "per-document seed",
        "guarantee": "as reproducible as the engine or server makes it; resumed documents "
        "may differ from an uninterrupted run",
    }


def without_credentials(engine: dict[str, Any]) -> dict[str, Any]:
    """Engine options as build.json may store them: a --base-url's user and password
    (http://user:secret@host) removed, since files in the build folder are shared."""
    url = engine.get("base_url")
    if not url:
        return engine
    parts = urlsplit(url)
    if parts.username is None and parts.password is None:
        return engine
    host = parts.hostname or ""
    netloc = f"[{host}]" if ":" in host else host
    if parts.port is not None:
        netloc += f":{parts.port}"
    return {**engine, "base_url": urlunsplit(parts._replace(netloc=netloc))}


def digest(data: Any) -> str:
    return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()


def report_summary(out: Path, result: BuildResult) -> str:
    """The one line `gen build` prints on stdout, plus a loud warning when one reason
    dropped most documents (the mix probably misfired)."""
    manifest = result.manifest
    counts = manifest["counts"]
    if result.already_complete:
        return f"{out}: already complete ({counts['kept']} rows); nothing to do"
    dropped = ", ".join(f"{n} {reason}" for reason, n in counts["dropped"].items()) or "none"
    line = (
        f"{out}: {counts['kept']} of {counts['generated']} documents kept "
        f"({manifest['tokens']['total']} tokens) in {len(manifest['shards'])} shard(s) "
        f"by {manifest['engine']} on {manifest['model']['name']}; dropped: {dropped}"
    )
    notes = misfire_warnings(manifest)
    promise = manifest.get("reproducibility") or {}
    if "may differ" in str(promise.get("guarantee", "")):
        notes.append(f"note: {manifest['engine']} ({promise.get('mode')}): {promise['guarantee']}")
    return "\n".join([line, *notes])


def misfire_warnings(manifest: dict[str, Any]) -> list[str]:
    counts = manifest["counts"]
    generated = counts.get("generated") or 0
    if not generated:
        return []
    warnings = []
    for reason, n in counts["dropped"].items():
        if n / generated <= 0.5:
            continue
        hint = {
            "truncated": "raise max_tokens (now "
            f"{manifest['config'].get('sampling', {}).get('max_tokens')}) or set "
            "filters.drop_truncated: false",
            "too-short": "lower filters.min_words or ask for longer documents",
            "near-duplicate": "the templates or the seed pools repeat: check gen templates stats",
        }.get(reason, "check this filter's minimum in the mix")
        warnings.append(
            f"warning: {n} of {generated} documents ({n / generated:.0%}) were dropped as "
            f"{reason}: {hint}"
        )
    return warnings
