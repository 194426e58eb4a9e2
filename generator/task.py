"""One task of a build: generate and process the chunks that rank `rank` of `world_size` owns.

The chunk grid is fixed by the build (chunk c holds documents [c*size, (c+1)*size)
and belongs to rank c % world_size), so tasks never overlap and any executor can
start any rank anywhere. Per chunk a task writes two checkpoints:

- `chunks/chunk-A-B.arrow`: the raw completions, exactly as the engine returned them;
- `processed/KEY/chunk-A-B.arrow`: every row after cleaning (dropped rows keep their
  reason), with heuristic and judge scores, token counts, the exact-dedup key and
  the MinHash signature: everything that costs time or a model call, so the merge
  and every rerun of it never asks a model again.

Processing runs in a background thread while the engine generates the next chunk
(a bounded queue between them), so the engine never waits for it; with judges,
which need the engine, processing runs between chunks instead.
"""

from __future__ import annotations

import hashlib
import json
import os
import queue
import re
import socket
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from filters.clean import Clean
from filters.judges import RUBRICS, Judge, JudgeEval, JudgeScorer, evaluate, validation_digest
from filters.scorers import Score, ScoreConfig
from filters.stage import Drop
from generator.build import Build, Progress, planned_document, reproducibility
from generator.checkpoints import (
    TaskStatus,
    chunk_name,
    contiguous_runs,
    covered,
    grid_owner,
    list_chunks,
    locked,
    parse_chunk_name,
    read_json,
    remove_temporaries,
    task_status_path,
    write_batch_atomic,
)
from generator.engines import Completion, Request, SamplingParams
from generator.errors import BuildError
from generator.prompts import StepPrompt, derive_seed
from generator.records import Document
from shards.format import from_batch, read_batches, schema_for, to_batch
from shards.writer import atomic_path, write_arrow_atomic, write_json_atomic

PROCESSED_EXTRA = [
    pa.field("drop_reason", pa.string(), nullable=True),
    pa.field("text_key", pa.binary(16), nullable=True),
    pa.field("minhash", pa.binary(), nullable=True),
]
_WS = re.compile(r"\s+")


@dataclass(frozen=True)
class TaskResult:
    rank: int
    world_size: int
    planned: int
    documents: int
    tokens: int
    generated_now: int
    wall_seconds: float


def run_task(
    out: Path, rank: int, world_size: int, *, progress: Progress | None = None
) -> TaskResult:
    """Run task `rank` of `world_size` of the build recorded in `out`; what executors call.
    Idempotent: a finished task returns at once."""
    if not (0 <= rank < world_size):
        raise BuildError(f"rank {rank} is outside 0..{world_size - 1}")
    build = Build.from_folder(out, progress)
    try:
        if build.generation_key() != build.state["generation_key"]:
            error = BuildError(
                f"{out}: the mix, templates or model changed since this build was prepared; "
                "run gen build again to re-prepare it, or choose another --out"
            )
            _mark_failed(build, rank, world_size, str(error))
            raise error
        return execute_task(build, rank, world_size)
    finally:
        build.close()
        build.progress.close()


def _mark_failed(build: Build, rank: int, world_size: int, error: str) -> None:
    """A task that cannot start still says so, so `gen status` never shows it pending."""
    path = task_status_path(build.work, rank, world_size)
    path.parent.mkdir(parents=True, exist_ok=True)
    now = time.time()
    status = TaskStatus(rank, world_size, state="failed", pid=os.getpid())
    status.host, status.started, status.updated, status.error = (
        socket.gethostname(),
        now,
        now,
        error,
    )
    write_json_atomic(path, status.to_dict())


def execute_task(build: Build, rank: int, world_size: int) -> TaskResult:
    """Run one task of a prepared build in this process (with its engines)."""
    status_path = task_status_path(build.work, rank, world_size)
    status_path.parent.mkdir(parents=True, exist_ok=True)
    with locked(
        status_path.with_suffix(".lock"),
        f"{build.out}: task {rank} of {world_size} is already running (pid {{pid}}); wait for it",
    ):
        return _Task(build, rank, world_size, status_path).run()


class _Task:
    def __init__(self, build: Build, rank: int, world_size: int, status_path: Path) -> None:
        self.build, self.rank, self.world_size = build, rank, world_size
        self.status_path = status_path
        self.chunk_size = build.chunk_size or build.resolved_chunk_size()
        self.processed = build.work / "processed" / build.processing_key()
        self.mix = build.mix
        self.progress = build.progress
        now = time.time()
        self.status = TaskStatus(
            rank=rank,
            world_size=world_size,
            pid=os.getpid(),
            host=socket.gethostname(),
            started=now,
            updated=now,
        )

    def _owns_name(self, name: str) -> bool:
        span = parse_chunk_name(name)
        return span is not None and self.owns(span[0])

    def owns(self, index: int) -> bool:
        return grid_owner(index, self.chunk_size, self.world_size) == self.rank

    # -- the task -----------------------------------------------------------------------

    def run(self) -> TaskResult:
        previous = read_json(self.status_path)
        if isinstance(previous, dict) and previous.get("state") == "done" and self._complete():
            return self._result(previous, generated_now=0)
        t0 = time.monotonic()
        mine = [i for i in range(self.build.documents) if self.owns(i)]
        self.status.planned = len(mine)
        self._heartbeat()
        try:
            generated = self._run(mine)
        except BaseException as exc:
            self.status.state = "failed"
            self.status.error = str(exc).splitlines()[0][:500] if str(exc) else type(exc).__name__
            self._heartbeat()
            raise
        self.status.state = "done"
        self.status.wall_seconds = round(time.monotonic() - t0, 3)
        self._heartbeat()
        return self._result(self.status.to_dict(), generated_now=generated)

    def _result(self, status: dict[str, Any], generated_now: int) -> TaskResult:
        return TaskResult(
            rank=self.rank,
            world_size=self.world_size,
            planned=status.get("planned", 0),
            documents=status.get("documents", 0),
            tokens=status.get("tokens", 0),
            generated_now=generated_now,
            wall_seconds=status.get("wall_seconds", 0.0),
        )

    def _complete(self) -> bool:
        """A done marker counts only if the chunks it stands for are still all there."""
        chunks, _ = list_chunks(self.processed)
        done = covered(chunks)
        return all(i in done for i in range(self.build.documents) if self.owns(i))

    def _heartbeat(self) -> None:
        self.status.updated = time.time()
        write_json_atomic(self.status_path, self.status.to_dict())

    def _run(self, mine: list[int]) -> int:
        build = self.build
        build.chunks.mkdir(parents=True, exist_ok=True)
        self.processed.mkdir(parents=True, exist_ok=True)
        # Temporaries a killed run left: only those of chunks this rank owns (the rank lock
        # makes this process their only writer).
        for folder in (build.chunks, self.processed, *(build.work / "steps").glob("*")):
            remove_temporaries(folder, "chunk-*.arrow", self._owns_name)
        raw, bad = list_chunks(build.chunks)
        for path in bad:  # ours by name, and wrong: regenerate rather than lose documents
            if self.owns(int(path.name[6:15])):
                build.warn(
                    f"warning: {path}: checkpoint does not hold the rows its name promises; "
                    "regenerating it"
                )
                path.unlink()
        raw = [c for c in raw if self.owns(c.first)]
        done_raw = covered(raw)
        processed, _ = list_chunks(self.processed)
        done_processed = covered(processed)
        missing = [i for i in mine if i not in done_raw]
        self.status.documents = len([i for i in mine if i in done_raw])
        self._prepare_judges()
        # Raw chunks of an earlier run whose processing never finished (or ran under
        # other filter settings) are processed first; nothing is regenerated for them.
        unprocessed = [c for c in raw if not all(i in done_processed for i in c.indices)]
        if unprocessed:
            self.progress.phase("processing checkpoints", total=len(unprocessed))
            for chunk in unprocessed:
                docs = list(_read_chunk(chunk.path))
                self._process(chunk.first, chunk.end, docs)
                self.progress.advance(1)
        self.progress.phase("generating", total=len(mine), done=len(mine) - len(missing))
        generated = self._generate(missing)
        if generated:
            write_json_atomic(build.work / "reproducibility.json", reproducibility(build.engine))
        return generated

    # -- generation -----------------------------------------------------------------------

    def _generate(self, missing: list[int]) -> int:
        """Generate the missing documents chunk by chunk, each checkpointed before the
        next starts; processing overlaps generation unless the judges need the engine."""
        failures: dict[int, str] = {}
        inline = bool(self.judges)
        work: queue.Queue[tuple[int, int, list[Document]] | None] = queue.Queue(maxsize=2)
        errors: list[BaseException] = []

        def consume() -> None:
            while (item := work.get()) is not None:
                if errors:
                    continue
                try:
                    self._process(*item)
                except BaseException as exc:  # surfaced in the main thread
                    errors.append(exc)

        worker = None if inline else threading.Thread(target=consume, daemon=True)
        if worker is not None:
            worker.start()
        try:
            grid = _grid_runs(missing, self.chunk_size)
            for run in grid:
                if errors:
                    break
                done, failed = self._generate_chunk(run)
                failures.update(failed)
                for piece in contiguous_runs(sorted(done), len(run)):
                    docs = [done[i] for i in piece]
                    if inline:
                        self._process(piece[0], piece[-1] + 1, docs)
                    else:
                        work.put((piece[0], piece[-1] + 1, docs))
        finally:
            if worker is not None:
                work.put(None)
                worker.join()
        if errors:
            raise errors[0]
        self._record_failures(failures, len(missing))
        return len(missing)

    def _generate_chunk(self, indices: Sequence[int]) -> tuple[dict[int, Document], dict[int, str]]:
        """Generate one chunk through its steps (idea -> document -> revise, as the family
        declares and the mix enables), batching each step across the chunk and
        checkpointing each step's outputs, so a kill between steps loses at most one step
        of one chunk."""
        build, mix = self.build, self.mix
        tokens_before = self.status.tokens
        plans = [planned_document(build.planner, mix.seed, i) for i in indices]
        system = {doc.index: text for doc, text in plans}
        docs = {doc.index: doc for doc, _ in plans}
        failures: dict[int, str] = {}
        ideas: dict[int, Completion] = {}
        wants_idea = [i for i in indices if self._runs(docs[i], "idea")]
        if wants_idea:
            ideas, failed = self._step(
                "idea",
                wants_idea,
                lambda i: build.library.render_step(docs[i].family, "idea", docs[i].axes, {}),
                lambda i: derive_seed("idea", mix.seed, i) % (2**31),
                max_tokens=mix.steps.idea_max_tokens,
            )
            failures.update(failed)

        prompts: dict[int, StepPrompt] = {}

        def document_prompt(i: int) -> StepPrompt:
            if i not in prompts:
                doc = docs[i]
                if "document" not in build.library.family(doc.family).step_templates:
                    prompts[i] = StepPrompt(system[i], doc.prompt)
                else:
                    inputs = {"idea": ideas[i].text} if i in ideas else {}
                    prompts[i] = build.library.render_step(doc.family, "document", doc.axes, inputs)
            return prompts[i]

        ready = [i for i in indices if i not in failures]
        revising = [i for i in ready if self._runs(docs[i], "revise")]
        drafts, failed = self._step(
            "draft" if revising else None,
            ready,
            document_prompt,
            lambda i: docs[i].seed,
            final=set(ready) - set(revising),
        )
        failures.update(failed)
        finals = {i: c for i, c in drafts.items() if i not in revising}
        revisable = [i for i in revising if i in drafts]
        if revisable:
            revised, failed = self._step(
                None,
                revisable,
                lambda i: build.library.render_step(
                    docs[i].family,
                    "revise",
                    docs[i].axes,
                    {"idea": ideas[i].text if i in ideas else "", "draft": drafts[i].text},
                ),
                lambda i: derive_seed("revise", mix.seed, i) % (2**31),
                final=set(revisable),
            )
            failures.update(failed)
            finals.update(revised)
        sampling = mix.sampling.to_dict()
        done: dict[int, Document] = {}
        for i, c in finals.items():
            done[i] = docs[i].replace(
                text=c.text,
                prompt=document_prompt(i).user,
                n_tokens=c.n_tokens,
                finish_reason=c.finish_reason,
                model=build.engine.model.name,
                engine=build.engine.name,
                sampling={**sampling, "seed": docs[i].seed},
                idea=ideas[i].text if i in ideas else "",
                draft=drafts[i].text if i in revising else "",
            )
        for run in contiguous_runs(sorted(done), len(indices)):
            write_arrow_atomic(
                build.chunks / chunk_name(run[0], run[-1] + 1), [done[i] for i in run]
            )
        self.status.documents += len(done)
        self.status.tokens = tokens_before + sum(d.n_tokens for d in done.values())
        self._heartbeat()
        return done, failures

    def _runs(self, doc: Document, step: str) -> bool:
        enabled = getattr(self.mix.steps, step)
        return enabled and step in self.build.library.family(doc.family).steps

    def _step(
        self,
        checkpoint: str | None,
        indices: list[int],
        prompt: Callable[[int], StepPrompt],
        seed: Callable[[int], int],
        max_tokens: int | None = None,
        final: set[int] = frozenset(),  # type: ignore[assignment]
    ) -> tuple[dict[int, Completion], dict[int, str]]:
        """One generation step for `indices`, all in one engine call. Outputs of an
        intermediate step (`checkpoint` names it) are checkpointed under
        `.work/steps/NAME/` and read back on a rerun instead of being generated again."""
        folder = self.build.work / "steps" / checkpoint if checkpoint else None
        outputs = _step_outputs(folder, indices) if folder else {}
        todo = [i for i in indices if i not in outputs]
        params = self.mix.sampling
        if max_tokens is not None:
            params = SamplingParams(**{**params.to_dict(), "max_tokens": max_tokens})
        prompts = {i: prompt(i) for i in todo}
        requests = [
            Request(prompts[i].user, _with_seed(params, seed(i)), system=prompts[i].system)
            for i in todo
        ]

        def on_result(k: int, completion: Completion) -> None:
            if completion.error is None:
                counted = 1 if todo[k] in final else 0
                self.progress.advance(counted, completion.n_tokens)

        completions = _generate(self.build.engine, requests, on_result) if requests else []
        failures: dict[int, str] = {}
        fresh: dict[int, Completion] = {}
        for i, completion in zip(todo, completions, strict=True):
            if completion.error is not None:
                failures[i] = completion.error
            else:
                fresh[i] = completion
        if folder is not None and fresh:
            folder.mkdir(parents=True, exist_ok=True)
            for run in contiguous_runs(sorted(fresh), len(indices)):
                rows = [
                    Document(
                        index=i,
                        family="",
                        template="",
                        axes={},
                        prompt="",
                        seed=seed(i),
                        text=fresh[i].text,
                        n_tokens=fresh[i].n_tokens,
                        finish_reason=fresh[i].finish_reason,
                    )
                    for i in run
                ]
                write_arrow_atomic(folder / chunk_name(run[0], run[-1] + 1), rows)
        return {**outputs, **fresh}, failures

    def _record_failures(self, failures: dict[int, str], asked: int) -> None:
        """Requests that failed for good are not checkpointed, so the next run asks for
        them again; until then the merge cannot run."""
        work = self.build.work
        path = (
            work / "failures.json"
            if self.world_size == 1
            else work / "tasks" / f"failures-{self.rank:05d}-of-{self.world_size:05d}.json"
        )
        if failures:
            write_json_atomic(path, {str(i): e for i, e in sorted(failures.items())})
            first = min(failures)
            raise BuildError(
                f"{self.build.out}: {len(failures)} of {asked} documents failed after retries "
                f"(document {first}: {failures[first]}); run the same command again to retry "
                f"them (all failures: {path})"
            )
        path.unlink(missing_ok=True)

    # -- processing ----------------------------------------------------------------------

    def _prepare_judges(self) -> None:
        self.judges: list[Judge] = []
        self.evaluations: dict[str, JudgeEval] = {}
        names = sorted(self.build.active_judges)
        if not names:
            return
        engine = self.build.judge_engine
        for name in names:
            evaluation = judge_evaluation(name, engine, self.progress)
            self.evaluations[name] = evaluation
            self.judges.append(Judge(JudgeScorer(RUBRICS[name], engine), None, evaluation))
        write_json_atomic(
            self.processed / "judges.json",
            {name: e.to_dict() for name, e in self.evaluations.items()},
        )

    def _process(self, first: int, end: int, raw: list[Document]) -> None:
        """Clean, score, judge, count and MinHash one chunk; write it as one checkpoint."""
        mix = self.mix
        cleaned = Clean(mix.filters).process_batch(raw)
        kept = [doc for doc in cleaned if isinstance(doc, Document)]
        if kept:
            scorer = Score(ScoreConfig(dict.fromkeys(mix.scores.minimums)))
            kept = [d for d in scorer.process_batch(kept) if isinstance(d, Document)]
            for judge in self.judges:
                kept = [d for d in judge.process_batch(kept) if isinstance(d, Document)]
            kept = self._recount(kept, {d.index: d.text for d in raw})
        by_index = {d.index: d for d in kept}
        signatures = (
            mix.dedup.hasher().signatures([d.text for d in kept])
            if kept
            else np.zeros((0, mix.dedup.num_perm), dtype=np.uint32)
        )
        signature_of = {d.index: signatures[k] for k, d in enumerate(kept)}
        rows: list[Document] = []
        reasons: list[str | None] = []
        keys: list[bytes | None] = []
        hashes: list[bytes | None] = []
        for doc, result in zip(raw, cleaned, strict=True):
            if isinstance(result, Drop):
                rows.append(doc)
                reasons.append(result.reason)
                keys.append(None)
                hashes.append(None)
                continue
            final = by_index[doc.index]
            rows.append(final)
            reasons.append(None)
            keys.append(text_key(final.text))
            hashes.append(signature_of[doc.index].astype("<u4").tobytes())
        write_processed(self.processed / chunk_name(first, end), rows, reasons, keys, hashes)

    def _recount(self, docs: list[Document], raw_text: dict[int, str]) -> list[Document]:
        """Token counts from the engine where the text is what it generated; recounted
        with the model's tokenizer only where cleaning changed it."""
        changed = [d for d in docs if d.text != raw_text[d.index]]
        if not changed:
            return docs
        counts = self.build.engine.count_tokens([d.text for d in changed])
        fixed = {d.index: c for d, c in zip(changed, counts, strict=True) if c is not None}
        return [d.replace(n_tokens=fixed[d.index]) if d.index in fixed else d for d in docs]


def _step_outputs(folder: Path, indices: list[int]) -> dict[int, Completion]:
    """Checkpointed outputs of an intermediate step for `indices`, where present."""
    wanted = set(indices)
    chunks, _ = list_chunks(folder)
    found: dict[int, Completion] = {}
    for chunk in chunks:
        if wanted.isdisjoint(chunk.indices):
            continue
        for doc in _read_chunk(chunk.path):
            if doc.index in wanted:
                found[doc.index] = Completion(doc.text, doc.n_tokens, doc.finish_reason)
    return found


def _grid_runs(indices: list[int], chunk_size: int) -> list[list[int]]:
    """Missing indices cut at the build's chunk grid, so chunk files line up across runs."""
    runs: list[list[int]] = []
    for run in contiguous_runs(indices, chunk_size):
        piece: list[int] = []
        for index in run:
            if piece and index % chunk_size == 0:
                runs.append(piece)
                piece = []
            piece.append(index)
        runs.append(piece)
    return runs


def _generate(engine: Any, requests: list[Request], on_result: Any) -> list[Completion]:
    """Engines that report per document take `on_result`; others report per chunk."""
    try:
        return engine.generate(requests, on_result=on_result)
    except TypeError as exc:
        if "on_result" not in str(exc):
            raise
    completions = engine.generate(requests)
    for k, completion in enumerate(completions):
        on_result(k, completion)
    return completions


def _with_seed(params: SamplingParams, seed: int) -> SamplingParams:
    return SamplingParams(**{**params.to_dict(), "seed": seed})


def text_key(text: str) -> bytes:
    """The exact-duplicate key: case and runs of whitespace ignored."""
    return hashlib.blake2b(_WS.sub(" ", text).strip().lower().encode(), digest_size=16).digest()


def write_processed(
    path: Path,
    docs: list[Document],
    reasons: list[str | None],
    keys: list[bytes | None],
    hashes: list[bytes | None],
) -> None:
    names = sorted({name for doc in docs for name in doc.scores})
    base = to_batch([d.replace(scores={n: d.scores.get(n) for n in names}) for d in docs])
    schema = pa.schema([*schema_for(names), *PROCESSED_EXTRA])
    columns = [*base.columns, pa.array(reasons, pa.string())]
    columns += [pa.array(keys, pa.binary(16)), pa.array(hashes, pa.binary())]
    batch = pa.RecordBatch.from_arrays(columns, schema=schema)
    write_batch_atomic(path, batch)


def _read_chunk(path: Path) -> list[Document]:
    docs: list[Document] = []
    for batch in read_batches(path):
        docs.extend(from_batch(batch))
    return docs


# -- judge validation, once per model --------------------------------------------------


def cache_dir() -> Path:
    """The user cache folder: GEN_CACHE_DIR, else $XDG_CACHE_HOME or ~/.cache."""
    explicit = os.environ.get("GEN_CACHE_DIR")
    if explicit:
        return Path(explicit)
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "alignment-datagen"


def judge_evaluation(name: str, engine: Any, progress: Progress | None = None) -> JudgeEval:
    """A judge's accuracy on the labelled passages, measured once per (judge version,
    engine, model digest, validation set) and cached in the user cache folder, so it
    runs once per model across all builds rather than once per build."""
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
    path = cache_dir() / "judge-eval" / f"{hashlib.sha256(key.encode()).hexdigest()[:24]}.json"
    cached = read_json(path)
    if isinstance(cached, dict) and cached.get("key") == key:
        fields = {
            k: v for k, v in cached["evaluation"].items() if k not in {"accuracy", "reliable"}
        }
        return JudgeEval(**fields)
    if progress is not None:
        progress.phase(f"validating the {name} judge on the labelled passages")
    evaluation = evaluate(rubric, engine)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(path) as tmp:
            tmp.write_text(json.dumps({"key": key, "evaluation": evaluation.to_dict()}) + "\n")
    except OSError:
        pass  # an unwritable cache costs a re-run, never the build
    return evaluation
