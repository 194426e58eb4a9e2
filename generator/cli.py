"""The `gen` command line: thin commands over the library.

Each command parses options, builds the objects it needs and calls one library
function. Library errors (`GenError`) become one line on stderr and exit code 1.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from generator import __version__
from generator.engines import ENGINE_KINDS, EngineConfig, create_engine
from generator.errors import GenError

DEFAULT_OUT = Path("out")

templates_option = click.option(
    "--templates",
    "templates_dir",
    type=click.Path(path_type=Path, file_okay=False),
    help="A folder of families/, lists/ and mixes/ searched before the built-in templates.",
)


def user_errors(func: Callable[..., Any]) -> Callable[..., Any]:
    """Show library errors as one clean line instead of a traceback."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except GenError as exc:
            raise click.ClickException(str(exc)) from None
        except KeyboardInterrupt:
            click.echo("\ninterrupted: run the same command again to resume", err=True)
            sys.exit(130)

    return wrapper


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="gen")
def main() -> None:
    """Generate synthetic alignment-pretraining documents into Arrow shards.

    \b
    Example:
      gen build --mix alignment-stories --limit 12 --out out/demo
    """


def option_group(name: str, options: list[Callable[..., Any]], build: Callable[..., Any]):
    """Apply a group of click options and hand the command one value, `name`, that
    `build` makes from their values (passed as keyword arguments)."""

    def decorate(func: Callable[..., Any]) -> Callable[..., Any]:
        probe: Any = lambda: None  # noqa: E731 - only collects the options' parameter names
        for option in options:
            probe = option(probe)
        keys = [param.name for param in probe.__click_params__]

        @functools.wraps(func)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            kwargs[name] = build(**{key: kwargs.pop(key) for key in keys})
            return func(*args, **kwargs)

        for option in reversed(options):
            wrapper = option(wrapper)
        return wrapper

    return decorate


DEDUP_OPTIONS = [
    click.option(
        "--dedup-threshold",
        type=click.FloatRange(0, 1, min_open=True),
        help="Jaccard similarity at which documents count as near-duplicates [0.8].",
    ),
    click.option("--dedup-ngram", type=click.IntRange(min=1), help="Words per shingle [5]."),
    click.option(
        "--dedup-num-perm", type=click.IntRange(min=1), help="MinHash permutations [128]."
    ),
]


dedup_options = option_group(
    "dedup",
    DEDUP_OPTIONS,
    lambda dedup_threshold, dedup_ngram, dedup_num_perm: {
        "threshold": dedup_threshold,
        "ngram": dedup_ngram,
        "num_perm": dedup_num_perm,
    },
)

ENGINE_OPTIONS = [
    click.option(
        "--engine",
        type=click.Choice(ENGINE_KINDS),
        default="auto",
        show_default=True,
        help="auto: vLLM on a CUDA machine when --model is not a GGUF file, else llama.cpp.",
    ),
    click.option(
        "--model",
        help="llamacpp: a GGUF file [default: bundled SmolLM2-135M-Instruct]; "
        "vllm: a Hugging Face id or local path; openai: the served model's name.",
    ),
    click.option("--base-url", help="openai: the server's base URL, e.g. http://localhost:8000/v1"),
    click.option(
        "--api-key-env",
        default="OPENAI_API_KEY",
        show_default=True,
        help="openai: the environment variable holding the API key (never printed or stored).",
    ),
    click.option(
        "--concurrency",
        type=click.IntRange(min=1),
        default=8,
        show_default=True,
        help="openai: requests in flight at once.",
    ),
    click.option(
        "--max-retries",
        type=click.IntRange(min=0),
        default=8,
        show_default=True,
        help="openai: retries per request on timeouts, 429 and 5xx.",
    ),
    click.option(
        "--workers",
        type=click.IntRange(min=1),
        help="llamacpp: worker processes, each with its own model  [default: one per core]",
    ),
    click.option(
        "--tensor-parallel-size",
        type=click.IntRange(min=1),
        default=1,
        show_default=True,
        help="vllm: GPUs per model replica.",
    ),
    click.option(
        "--gpu-memory-utilization",
        type=click.FloatRange(0, 1, min_open=True),
        default=0.9,
        show_default=True,
        help="vllm: share of GPU memory to use.",
    ),
    click.option("--max-model-len", type=click.IntRange(min=1), help="vllm: context length."),
    click.option("--dtype", default="auto", show_default=True, help="vllm: weight dtype."),
    click.option("--quantization", help="vllm: quantization method (awq, gptq, fp8, ...)."),
]


def _engine_config(
    engine: str,
    model: str | None,
    base_url: str | None,
    api_key_env: str,
    concurrency: int,
    max_retries: int,
    workers: int | None,
    **vllm: Any,
) -> EngineConfig:
    return EngineConfig(
        kind=engine,
        model=model,
        base_url=base_url,
        api_key_env=api_key_env,
        concurrency=concurrency,
        max_retries=max_retries,
        workers=workers,
        vllm=vllm,
    )


engine_options = option_group("engine_config", ENGINE_OPTIONS, _engine_config)


@main.command()
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
@click.option("--quiet", "-q", is_flag=True, help="No progress bar.")
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
    judge_engine: str | None,
    judge_model: str | None,
    decontaminate: Path | None,
    decontaminate_ngram: int,
    chunk_size: int | None,
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
    from filters.decontam import DecontamConfig
    from generator.build import Build
    from generator.mix import load_mix
    from generator.prompts import TemplateLibrary

    library = TemplateLibrary(templates_dir)
    mix = load_mix(mix_ref, library).with_overrides(seed=seed, max_tokens=max_tokens, dedup=dedup)
    engine = create_engine(engine_config)
    judge = None
    if judge_engine or judge_model:
        kind = judge_engine or engine_config.kind
        judge = create_engine(dataclasses.replace(engine_config, kind=kind, model=judge_model))
    job = Build(
        mix=mix,
        library=library,
        engine=engine,
        out=out or DEFAULT_OUT / mix.name,
        limit=limit,
        chunk_size=chunk_size,
        decontaminate=DecontamConfig(decontaminate, decontaminate_ngram) if decontaminate else None,
        judge_engine=judge,
        progress=_progress_bar(quiet),
        warn=lambda message: click.echo(message, err=True),
    )
    try:
        result = job.run()
    finally:
        engine.close()
        if judge is not None:
            judge.close()
    manifest = result.manifest
    counts = manifest["counts"]
    if result.already_complete:
        click.echo(f"{job.out}: already complete ({counts['kept']} rows); nothing to do")
        return
    dropped = ", ".join(f"{n} {reason}" for reason, n in counts["dropped"].items()) or "none"
    click.echo(
        f"{job.out}: {counts['kept']} of {counts['generated']} documents kept "
        f"({manifest['tokens']['total']} tokens) in {len(manifest['shards'])} shard(s) "
        f"by {manifest['engine']} on {manifest['model']['name']}; dropped: {dropped}"
    )


def _progress_bar(quiet: bool) -> Any:
    """A tqdm bar on stderr (documents, tokens per second, ETA), or silence."""
    from generator.build import Progress

    if quiet:
        return Progress()

    class Bar(Progress):
        def start(self, total: int, done: int) -> None:
            from tqdm import tqdm

            self.bar = tqdm(
                total=total, initial=done, unit="doc", desc="generating", file=sys.stderr
            )
            self.tokens, self.t0 = 0, time.monotonic()

        def advance(self, docs: int, tokens: int) -> None:
            self.tokens += tokens
            elapsed = max(time.monotonic() - self.t0, 1e-9)
            self.bar.set_postfix_str(f"{self.tokens / elapsed:.1f} tok/s", refresh=False)
            self.bar.update(docs)

        def close(self) -> None:
            self.bar.close()

    return Bar()


@main.group()
def templates() -> None:
    """List template families and render their prompts without a model."""


@templates.command("list")
@templates_option
@user_errors
def templates_list(templates_dir: Path | None) -> None:
    """List template families (with version and axes) and mixes.

    \b
    Example:
      gen templates list
    """
    from generator.mix import builtin_mix_names
    from generator.prompts import TemplateLibrary

    library = TemplateLibrary(templates_dir)
    for name in library.family_names():
        family = library.family(name)
        axes = ", ".join([*family.axes, *(d.name for d in family.draws)])
        click.echo(f"{family.ref:<24} {family.description}")
        click.echo(f"{'':<24} axes: {axes}")
    click.echo("\nmixes: " + ", ".join(builtin_mix_names(library)))


@templates.command("render")
@click.argument("family")
@templates_option
@click.option("--n", "count", type=click.IntRange(min=1), default=3, show_default=True)
@click.option("--seed", type=click.IntRange(min=0), default=0, show_default=True)
@click.option(
    "--jsonl", is_flag=True, help="One JSON object per line: index, family, template, axes, prompt."
)
@user_errors
def templates_render(
    family: str, templates_dir: Path | None, count: int, seed: int, jsonl: bool
) -> None:
    """Render COUNT prompts of FAMILY, exactly as a build with SEED would for that family.

    \b
    Example:
      gen templates render deployment-story --n 2 --seed 7
    """
    from generator.prompts import TemplateLibrary

    library = TemplateLibrary(templates_dir)
    for index in range(count):
        rendered = library.render_document(family, seed, index)
        if jsonl:
            record = {
                "index": index,
                "family": rendered.family,
                "template": rendered.template,
                "axes": rendered.axes,
                "prompt": rendered.prompt,
            }
            click.echo(json.dumps(record, ensure_ascii=False))
            continue
        click.echo(f"=== {rendered.template} #{index} (seed {seed}) ===")
        for axis, value in rendered.axes.items():
            shown = ", ".join(value) if isinstance(value, list) else value
            click.echo(f"  {axis}: {shown}")
        click.echo("")
        click.echo(rendered.prompt)
        click.echo("")


# Commands that read builds back live in their own module; registered here so
# `gen` is one group.
from generator.cli_shards import dedup, export, inspect, score  # noqa: E402

main.add_command(inspect)
main.add_command(export)
main.add_command(dedup)
main.add_command(score)


@main.command("judge-eval")
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
