"""Build orchestration: plan, generate in checkpointed chunks, filter, write shards.

The output folder holds the shards and `manifest.json`, plus a `.work/` folder
with the lock and the raw generation checkpoints:

    OUT/shard-00000.arrow ...   cleaned, deduplicated documents
    OUT/manifest.json           written last: its presence means "complete"
    OUT/.work/lock              held (flock) while a build runs
    OUT/.work/state.json        the generation key the checkpoints belong to
    OUT/.work/chunks/chunk-<first>-<end>.arrow
                                raw completions for documents [first, end)

Every document is a pure function of (mix, templates, seed, index, engine,
model), so generation can stop anywhere and resume by generating only the
indices that no checkpoint covers; filtering and sharding then run over all
checkpoints in index order and give exactly what an uninterrupted run gives.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import random
import re
import sys
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from filters.clean import Clean
from filters.decontam import DecontamConfig, Decontaminate
from filters.dedup import ExactDedup, NearDedup
from filters.diversity import Diversity
from filters.judges import RUBRICS, Judge, JudgeEval, JudgeScorer, evaluate, validation_digest
from filters.scorers import Score
from filters.stage import Drop, Stage, run_pipeline
from generator import __version__
from generator.engines import Engine, Request, SamplingParams
from generator.errors import BuildError
from generator.mix import Mix
from generator.prompts import TemplateLibrary, derive_seed
from generator.records import Document
from shards.format import read_documents
from shards.writer import write_arrow_atomic, write_json_atomic, write_shards

MANIFEST = "manifest.json"
NEAR_DUPLICATES = "near-duplicates.json"
MANIFEST_FORMAT = "alignment-datagen/manifest@1"
_CHUNK_NAME = re.compile(r"^chunk-(\d{9})-(\d{9})\.arrow$")


@dataclass(frozen=True)
class BuildResult:
    manifest: dict[str, Any]
    generated_now: int
    already_complete: bool


class Progress:
    """Receives generation progress; silent by default. The CLI draws a bar from it."""

    def start(self, total: int, done: int) -> None:
        """`total` documents planned, `done` of them already checkpointed."""

    def advance(self, docs: int, tokens: int) -> None:
        """A chunk of `docs` documents and `tokens` generated tokens was checkpointed."""

    def close(self) -> None:
        """Generation ended, normally or not."""


def plan_document(mix: Mix, library: TemplateLibrary, index: int) -> Document:
    """Everything about document `index` except its text: family, axes, prompt, seed."""
    names = list(mix.families)
    family = random.Random(derive_seed("family", mix.seed, index)).choices(
        names, weights=[mix.families[n] for n in names]
    )[0]
    rendered = library.render_document(family, mix.seed, index)
    return Document(
        index=index,
        family=rendered.family,
        template=rendered.template,
        axes=rendered.axes,
        prompt=rendered.prompt,
        seed=derive_seed("generate", mix.seed, index) % (2**31),
    )


@dataclass
class Build:
    mix: Mix
    library: TemplateLibrary
    engine: Engine
    out: Path
    limit: int | None = None
    chunk_size: int | None = None
    decontaminate: DecontamConfig | None = None
    judge_engine: Engine | None = None
    progress: Progress = field(default_factory=Progress)
    warn: Callable[[str], None] = field(default=lambda message: print(message, file=sys.stderr))

    def __post_init__(self) -> None:
        self.work = self.out / ".work"
        self.chunks = self.work / "chunks"
        self.documents = min(self.mix.documents, self.limit or self.mix.documents)
        self.chunk_size = self.chunk_size or self.engine.default_chunk_size

    # -- identity -----------------------------------------------------------------

    def generation_key(self) -> str:
        """What each document's text depends on; checkpoints are valid only under it."""
        return _digest(
            {
                "families": self.mix.families,
                "seed": self.mix.seed,
                "sampling": self.mix.sampling.to_dict(),
                "templates": self.library.fingerprint(self.mix.families),
                "engine": self.engine.name,
                "model": [self.engine.model.name, self.engine.model.sha256],
            }
        )

    def config_hash(self, generation_key: str) -> str:
        """Everything the finished shards depend on: generation plus filtering and sharding."""
        return _digest({"generation": generation_key, "config": self.resolved_config()})

    def resolved_config(self) -> dict[str, Any]:
        config = self.mix.to_dict()
        config["documents"] = self.documents
        if self.decontaminate is not None:
            config["decontaminate"] = self.decontaminate.describe()
        if self.mix.judges.minimums:
            judge = self.judge_engine or self.engine
            config["judge"] = {
                "engine": judge.name,
                "model": [judge.model.name, judge.model.sha256],
            }
        return config

    # -- running --------------------------------------------------------------------

    def run(self) -> BuildResult:
        # Everything that can be wrong with the input fails here, before any write.
        self._decontaminate = Decontaminate(self.decontaminate) if self.decontaminate else None
        key = self.generation_key()  # renders templates, hashes the model
        config_hash = self.config_hash(key)
        self.out.mkdir(parents=True, exist_ok=True)
        with self._locked():
            manifest = self._existing_manifest()
            if manifest and manifest.get("config_hash") == config_hash:
                return BuildResult(manifest, generated_now=0, already_complete=True)
            self._claim(key)
            generated = self._generate_missing()
            manifest = self._finalize(key, config_hash)
            return BuildResult(manifest, generated_now=generated, already_complete=False)

    @contextmanager
    def _locked(self) -> Iterator[None]:
        self.chunks.mkdir(parents=True, exist_ok=True)
        lock_path = self.work / "lock"
        with lock_path.open("a+") as handle:
            try:
                fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                handle.seek(0)
                holder = handle.read().strip() or "unknown"
                raise BuildError(
                    f"{self.out}: another build is writing to this folder (pid {holder}); "
                    "wait for it or choose another --out"
                ) from None
            handle.seek(0)
            handle.truncate()
            handle.write(str(os.getpid()))
            handle.flush()
            self._remove_orphaned_temporaries()
            yield

    def _remove_orphaned_temporaries(self) -> None:
        """Temporary files of a killed build; safe to delete once we hold the lock."""
        for folder in (self.out, self.chunks):
            for path in folder.glob(".*.tmp-*"):
                path.unlink(missing_ok=True)

    def _existing_manifest(self) -> dict[str, Any] | None:
        path = self.out / MANIFEST
        if not path.exists():
            return None
        try:
            return json.loads(path.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError):
            return None  # rewritten by this build's finalize

    def _claim(self, key: str) -> None:
        """Refuse to mix checkpoints of two different configurations in one folder."""
        state_path = self.work / "state.json"
        if state_path.exists():
            try:
                state = json.loads(state_path.read_text(encoding="utf-8"))
            except (OSError, json.JSONDecodeError):
                raise BuildError(
                    f"{state_path}: unreadable build state; delete the folder"
                ) from None
            if state.get("generation_key") != key:
                raise BuildError(
                    f"{self.out}: holds a build with a different mix, templates, seed, sampling "
                    "or model; choose another --out or delete the folder"
                )
        else:
            write_json_atomic(state_path, {"generation_key": key})

    def _covered(self) -> set[int]:
        covered: set[int] = set()
        for path in self.chunks.iterdir():
            match = _CHUNK_NAME.match(path.name)
            if match:
                covered.update(range(int(match[1]), int(match[2])))
        return covered

    def _generate_missing(self) -> int:
        """Generate every planned document no checkpoint covers; returns how many were asked for.

        Requests that failed for good are not checkpointed, so the next run asks
        for them again; until then the build stops short of writing shards.
        """
        covered = self._covered()
        missing = [i for i in range(self.documents) if i not in covered]
        failures: dict[int, str] = {}
        self.progress.start(self.documents, self.documents - len(missing))
        try:
            for run in _contiguous_runs(missing, self.chunk_size):
                failures.update(self._generate_chunk(run))
        finally:
            self.progress.close()
        failures_path = self.work / "failures.json"
        if failures:
            write_json_atomic(failures_path, {str(i): e for i, e in sorted(failures.items())})
            first = min(failures)
            raise BuildError(
                f"{self.out}: {len(failures)} of {len(missing)} documents failed after retries "
                f"(document {first}: {failures[first]}); run the same command again to retry "
                f"them (all failures: {failures_path})"
            )
        failures_path.unlink(missing_ok=True)
        return len(missing)

    def _generate_chunk(self, indices: Sequence[int]) -> dict[int, str]:
        """Generate and checkpoint one chunk; returns the failed documents' errors."""
        planned = [plan_document(self.mix, self.library, i) for i in indices]
        requests = [Request(doc.prompt, _with_seed(self.mix.sampling, doc.seed)) for doc in planned]
        completions = self.engine.generate(requests)
        sampling = self.mix.sampling.to_dict()
        done: dict[int, Document] = {}
        failures: dict[int, str] = {}
        for doc, c in zip(planned, completions, strict=True):
            if c.error is not None:
                failures[doc.index] = c.error
                continue
            done[doc.index] = doc.replace(
                text=c.text,
                n_tokens=c.n_tokens,
                finish_reason=c.finish_reason,
                model=self.engine.model.name,
                engine=self.engine.name,
                sampling={**sampling, "seed": doc.seed},
            )
        # Checkpoint names state their index range, so failures split a chunk in runs.
        for run in _contiguous_runs(sorted(done), len(indices)):
            name = f"chunk-{run[0]:09d}-{run[-1] + 1:09d}.arrow"
            write_arrow_atomic(self.chunks / name, [done[i] for i in run])
        self.progress.advance(len(done), sum(d.n_tokens for d in done.values()))
        return failures

    def _raw_documents(self) -> Iterator[Document]:
        paths = sorted(p for p in self.chunks.iterdir() if _CHUNK_NAME.match(p.name))
        for doc in read_documents(paths):
            if doc.index < self.documents:
                yield doc

    def _finalize(self, key: str, config_hash: str) -> dict[str, Any]:
        (self.out / MANIFEST).unlink(missing_ok=True)
        judges = [self._judge(name, m) for name, m in sorted(self.mix.judges.minimums.items())]
        counter = CountTokens(self.engine)
        near = NearDedup(self.mix.dedup) if self.mix.dedup.enabled else None
        stages: list[Stage] = [
            Clean(self.mix.filters),
            ExactDedup(),
            *([near] if near else []),
            Score(self.mix.scores),
            *([self._decontaminate] if self._decontaminate else []),
            *judges,  # last of the filters: each costs a model call per document
            counter,
        ]
        tally, diversity = Tally(), Diversity()
        kept = diversity.run(tally.run(run_pipeline(self._raw_documents(), stages)))
        shards = write_shards(kept, self.out, self.mix.shards)
        self._remove_stale_shards({s.path for s in shards})
        dropped = Counter[str]()
        for stage in stages:
            dropped.update(stage.stats.dropped)
        manifest = {
            "format": MANIFEST_FORMAT,
            "package_version": __version__,
            "mix": {"name": self.mix.name, "ref": self.mix.source, "sha256": self.mix.sha256},
            "config": self.resolved_config(),
            "config_hash": config_hash,
            "generation_key": key,
            "seed": self.mix.seed,
            "engine": self.engine.name,
            "model": {"name": self.engine.model.name, "sha256": self.engine.model.sha256},
            "templates": {
                name: self.library.family(name).ref for name in sorted(self.mix.families)
            },
            "counts": {
                "planned": self.documents,
                "generated": stages[0].stats.seen,
                "kept": tally.rows,
                "dropped": dict(sorted(dropped.items())),
            },
            "stages": [stage.stats.to_dict() for stage in stages],
            "documents_per_family": dict(sorted(tally.documents.items())),
            "tokens": {
                "total": sum(tally.tokens.values()),
                "per_family": dict(sorted(tally.tokens.items())),
                "counted_with": "model tokenizer"
                if counter.uncounted == 0
                else f"engine usage before cleaning for {counter.uncounted} rows",
            },
            "shards": [s.__dict__ for s in shards],
            "diversity": diversity.report(),
            "judges": {
                stage.scorer.name: {
                    **stage.evaluation.to_dict(),
                    "minimum": stage.minimum,
                    "drops_rows": stage.reliable and stage.minimum is not None,
                    "unparsed_in_build": stage.scorer.failures,
                }
                for stage in judges
            },
        }
        if near is not None:
            write_json_atomic(self.out / NEAR_DUPLICATES, near.duplicate_of)
            manifest["near_duplicates"] = {"file": NEAR_DUPLICATES, "count": len(near.duplicate_of)}
        write_json_atomic(self.out / MANIFEST, manifest)
        return manifest

    def _judge(self, name: str, minimum: float | None) -> Judge:
        """A judge stage, trusted to drop rows only if it passes the validation set."""
        engine = self.judge_engine or self.engine
        evaluation = self._evaluate(name, engine)
        if not evaluation.reliable:
            self.warn(
                f"warning: the {name} judge ({engine.name}, {engine.model.name}) scored "
                f"{evaluation.accuracy:.2f} on the validation set (needs 0.80): its scores are "
                "kept but no rows are dropped on them"
            )
        return Judge(JudgeScorer(RUBRICS[name], engine), minimum, evaluation)

    def _evaluate(self, name: str, engine: Engine) -> JudgeEval:
        """Judge accuracy on the labelled passages, cached per judge, model and set version."""
        rubric = RUBRICS[name]
        key = "|".join(
            [
                f"{name}@{rubric.version}",
                engine.name,
                engine.model.name,
                engine.model.sha256,
                validation_digest(),
            ]
        )
        path = self.work / "judge-eval.json"
        cache = json.loads(path.read_text(encoding="utf-8")) if path.exists() else {}
        if key not in cache:
            cache[key] = evaluate(rubric, engine).to_dict()
            write_json_atomic(path, cache)
        fields = {k: v for k, v in cache[key].items() if k not in {"accuracy", "reliable"}}
        return JudgeEval(**fields)

    def _remove_stale_shards(self, keep: set[str]) -> None:
        for path in self.out.glob("shard-*.arrow"):
            if path.name not in keep:
                path.unlink()


class CountTokens(Stage):
    """Recount tokens after cleaning, with the generating model's own tokenizer."""

    name = "count-tokens"

    def __init__(self, engine: Engine) -> None:
        super().__init__()
        self.engine = engine
        self.uncounted = 0

    def process(self, doc: Document) -> Document | Drop:
        (count,) = self.engine.count_tokens([doc.text])
        if count is None:  # the engine cannot count: keep its usage figure for the raw text
            self.uncounted += 1
            return doc
        return doc.replace(n_tokens=count)


class Tally:
    """Per-family rows and tokens of what reaches the shards."""

    def __init__(self) -> None:
        self.rows = 0
        self.documents: Counter[str] = Counter()
        self.tokens: Counter[str] = Counter()

    def run(self, docs: Iterator[Document]) -> Iterator[Document]:
        for doc in docs:
            self.rows += 1
            self.documents[doc.family] += 1
            self.tokens[doc.family] += doc.n_tokens
            yield doc


def _with_seed(params: SamplingParams, seed: int) -> SamplingParams:
    return SamplingParams(**{**params.to_dict(), "seed": seed})


def _contiguous_runs(indices: Sequence[int], size: int) -> Iterator[list[int]]:
    """Split sorted indices into runs of consecutive numbers, at most `size` long,
    so each chunk file names its range exactly."""
    run: list[int] = []
    for index in indices:
        if run and (index != run[-1] + 1 or len(run) == size):
            yield run
            run = []
        run.append(index)
    if run:
        yield run


def _digest(data: Any) -> str:
    return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()
