"""`gen build` and `gen judge-eval`: the commands that run models."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import click

from generator.cli.common import (
    DEFAULT_OUT,
    ENGINE_KINDS,
    dedup_options,
    engine_options,
    templates_option,
    user_errors,
)
from generator.cli.progress import progress_display
from generator.cli.scale import describe_outcome, executor_options
from generator.engines import EngineConfig, create_engine
from generator.executors import ExecutorConfig


@click.command()
@click.option(
    "--mix", "mix_ref", required=True, help="A built-in mix name or a path to a mix YAML file."
)
@templates_option
@click.option(
    "--out",
    type=click.Path(path_type=Path, file_okay=False),
    help="Output folder for shards and manifest.json  [default: out/MIX-NAME]",
)
@click.option("--limit", type=click.IntRange(min=1), help="Generate at most this many documents.")
@click.option("--seed", type=click.IntRange(min=0), help="Override the mix's build seed.")
@click.option("--max-tokens", type=click.IntRange(min=1), help="Override the mix's max_tokens.")
@dedup_options
@engine_options
@executor_options
@click.option(
    "--judge-engine",
    type=click.Choice(ENGINE_KINDS),
    help="Engine for the mix's judges  [default: the build's own engine]",
)
@click.option("--judge-model", help="Model for the judges  [default: the build's own model]")
@click.option(
    "--decontaminate",
    "decontaminate",
    type=click.Path(path_type=Path, dir_okay=False, exists=True),
    help="Eval items (JSONL, CSV or Parquet): drop rows sharing a word n-gram with any of them.",
)
@click.option(
    "--decontaminate-ngram",
    type=click.IntRange(min=1),
    default=13,
    show_default=True,
    help="Words per n-gram for --decontaminate.",
)
@click.option(
    "--chunk-size",
    type=click.IntRange(min=1),
    help="Documents generated between checkpoints  [default: the engine's]",
)
@click.option(
    "--judges",
    help="Judges to run, comma-separated, or 'none'  [default: the mix's; none on the "
    "bundled model, which cannot judge]",
)
@click.option("--quiet", "-q", is_flag=True, help="No progress display.")
@user_errors
def build(
    mix_ref: str,
    templates_dir: Path | None,
    out: Path | None,
    limit: int | None,
    seed: int | None,
    max_tokens: int | None,
    dedup: dict[str, Any],
    engine_config: EngineConfig,
    executor_config: ExecutorConfig,
    judge_engine: str | None,
    judge_model: str | None,
    decontaminate: Path | None,
    decontaminate_ngram: int,
    chunk_size: int | None,
    judges: str | None,
    quiet: bool,
) -> None:
    """Render prompts, generate documents, clean and deduplicate them, write shards.

    A build killed at any point resumes when the same command runs again;
    re-running a finished build does nothing.

    \b
    Examples:
      gen build --mix alignment-stories --limit 12 --out out/demo
      gen build --mix alignment-stories --engine vllm --model Qwen/Qwen2.5-7B-Instruct
      gen build --mix alignment-stories --engine openai --base-url http://gpu1:8000/v1 \\
          --model served-model-name --concurrency 64
    """
    from generator.build import (
        Build,
        BuildResult,
        BuildSpec,
        report_summary,
        without_credentials,
    )
    from generator.executors import run_executor
    from generator.run import run_build

    judge_config = (
        dataclasses.replace(
            engine_config, kind=judge_engine or engine_config.kind, model=judge_model
        )
        if (judge_engine or judge_model)
        else None
    )
    spec = BuildSpec(
        mix=str(Path(mix_ref).resolve()) if Path(mix_ref).is_file() else mix_ref,
        templates_dir=str(templates_dir.resolve()) if templates_dir else None,
        limit=limit,
        seed=seed,
        max_tokens=max_tokens,
        dedup={k: v for k, v in dedup.items() if v is not None},
        engine=without_credentials(dataclasses.asdict(engine_config)),
        judge_engine=without_credentials(dataclasses.asdict(judge_config))
        if judge_config
        else None,
        judges=judges,
        decontaminate=str(decontaminate.resolve()) if decontaminate else None,
        decontaminate_ngram=decontaminate_ngram,
        chunk_size=chunk_size,
    )
    job = Build.from_spec(spec, out=out or Path("."), progress=progress_display(quiet))
    if out is None:
        job = dataclasses.replace(job, out=DEFAULT_OUT / job.mix.name)
    # This process keeps the engine options as given (a --base-url may carry credentials,
    # which build.json never stores: tasks elsewhere take the key from --api-key-env).
    job.engine_config, job.judge_engine_config = engine_config, judge_config
    in_process = executor_config.kind == "local" and executor_config.tasks == 1
    if in_process and not executor_config.gpus_per_task:
        try:
            result = run_build(job)
        finally:
            job.close()
        click.echo(report_summary(job.out, result))
        return
    # Several tasks or another executor: prepare here (validate, claim the folder, record
    # the spec), then the executor decides where the tasks and the merge run.
    try:
        job.prepare()
        done = job.complete_manifest()
    finally:
        job.close()
    if done is not None:
        click.echo(report_summary(job.out, BuildResult(done, 0, already_complete=True)))
        return
    outcome = run_executor(job.out, executor_config, progress=job.progress)
    job.progress.close()
    if outcome.completed:
        click.echo(report_summary(job.out, BuildResult(outcome.manifest, 0, False)))
    else:
        click.echo(describe_outcome(job.out, outcome))


@click.command("judge-eval")
@click.option(
    "--judges",
    default="alignment,aesthetic,realism",
    show_default=True,
    help="Comma-separated judge names.",
)
@click.option(
    "--limit", type=click.IntRange(min=2), help="Use only N passages per judge (quick look)."
)
@engine_options
@user_errors
def judge_eval(judges: str, limit: int | None, engine_config: EngineConfig) -> None:
    """Measure how well a model judges: accuracy on the project's labelled passages.

    A judge needs 0.80 to be trusted with dropping rows in a build. The last line
    printed is one JSON object.

    \b
    Examples:
      gen judge-eval                                  # the bundled model
      gen judge-eval --engine vllm --model Qwen/Qwen2.5-7B-Instruct
      gen judge-eval --engine openai --base-url http://gpu1:8000/v1 --model judge
    """
    from filters.judges import RUBRICS, evaluate

    names = [n.strip() for n in judges.split(",") if n.strip()]
    unknown = [n for n in names if n not in RUBRICS]
    if unknown:
        known = ", ".join(sorted(RUBRICS))
        raise click.UsageError(f"--judges: unknown judge '{unknown[0]}' (known: {known})")
    engine = create_engine(engine_config)
    try:
        results = [evaluate(RUBRICS[name], engine, limit) for name in names]
    finally:
        engine.close()
    for r in results:
        verdict = "reliable" if r.reliable else "unreliable"
        click.echo(
            f"{r.judge:<10} accuracy {r.accuracy:.2f} ({r.correct}/{r.items}, "
            f"{r.unparsed} unparsed replies)  {verdict}  [{r.engine}, {r.model}]"
        )
    click.echo(json.dumps({"judge_eval": [r.to_dict() for r in results]}))
