"""`gen eval` and `gen evalset`: measure a model on A/B propensity items, and make more items."""

from __future__ import annotations

import contextlib
import json
import re
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import click

from generator.cli.common import DEFAULT_OUT, engine_options, templates_option, user_errors
from generator.engines import EngineConfig, create_engine


@click.command("eval")
@click.option(
    "--set",
    "set_path",
    type=click.Path(path_type=Path, dir_okay=False),
    help="Eval items, JSONL  [default: the shipped templates/evals/propensity.jsonl]",
)
@engine_options
@click.option("--limit", type=click.IntRange(min=1), help="Evaluate only the first N items.")
@click.option(
    "--out",
    type=click.Path(path_type=Path, dir_okay=False),
    help="Where to write the JSON report  [default: out/eval-SET-MODEL.json]",
)
@click.option(
    "--compare",
    "compare_path",
    type=click.Path(path_type=Path, dir_okay=False),
    help="Another report (e.g. the model before training): print the paired difference.",
)
@click.option("--quiet", "-q", is_flag=True, help="No progress bar.")
@user_errors
def eval_command(
    set_path: Path | None,
    engine_config: EngineConfig,
    limit: int | None,
    out: Path | None,
    compare_path: Path | None,
    quiet: bool,
) -> None:
    """Misaligned-choice rate of a model on A/B propensity items.

    Each item is asked twice, with the aligned action as A and then as B; the
    model's choice is read from the next-token log-probabilities of "A" and "B".
    Prints the rate overall and per category with 95% Wilson intervals over
    items, the position bias, and the items answered misaligned in both orders.

    \b
    Examples:
      gen eval --limit 20                                   # the bundled model, shipped set
      gen eval --engine vllm --model my-org/base-7b --out before.json
      gen eval --engine vllm --model my-org/trained-7b --compare before.json
    """
    from generator.evals import (
        EvalError,
        compare_reports,
        default_set_path,
        format_comparison,
        format_report,
        load_eval_set,
        load_report,
        run_eval,
    )
    from shards.writer import write_json_atomic

    eval_set = load_eval_set(set_path or default_set_path())
    other = load_report(compare_path) if compare_path else None
    engine = create_engine(engine_config)
    if not hasattr(engine, "option_logprobs"):
        raise EvalError(f"the {engine.name} engine cannot read option log-probabilities")
    total = min(len(eval_set.items), limit or len(eval_set.items))
    try:
        with _bar(total, "asking", quiet) as advance:
            report = run_eval(eval_set, engine, limit, progress=advance)
    finally:
        engine.close()
    if out is None:
        model = re.sub(r"[^\w.-]+", "-", engine.model.name).strip("-")
        out = DEFAULT_OUT / f"eval-{eval_set.path.stem}-{model}.json"
    write_json_atomic(out, report)
    click.echo(format_report(report))
    if other is not None:
        comparison = compare_reports(report, other)
        click.echo(format_comparison(comparison, out.name, compare_path.name))
    click.echo(f"report: {out}")


@contextlib.contextmanager
def _bar(total: int, label: str, quiet: bool) -> Iterator[Callable[[int], None]]:
    """A progress bar on stderr, driven by a callback taking the number done so far."""
    if quiet:
        yield lambda done: None
        return
    with click.progressbar(length=total, label=label, file=sys.stderr) as bar:
        yield lambda done: bar.update(done - bar.pos)


@click.command("evalset")
@click.option(
    "--mix", "mix_ref", default="propensity", show_default=True, help="Mix of item families."
)
@templates_option
@click.option(
    "--out",
    type=click.Path(path_type=Path, file_okay=False),
    required=True,
    help="Folder for items.jsonl, rejected.jsonl and manifest.json.",
)
@click.option("--limit", type=click.IntRange(min=1), help="Generate at most this many items.")
@click.option(
    "--against",
    type=click.Path(path_type=Path, file_okay=False),
    help="A build folder: refuse items that any of its documents contains or retells.",
)
@click.option("--seed", type=click.IntRange(min=0), help="Override the mix's seed.")
@click.option("--max-tokens", type=click.IntRange(min=1), help="Override the mix's max_tokens.")
@engine_options
@click.option("--quiet", "-q", is_flag=True, help="No progress bar.")
@user_errors
def evalset(
    mix_ref: str,
    templates_dir: Path | None,
    out: Path,
    limit: int | None,
    against: Path | None,
    seed: int | None,
    max_tokens: int | None,
    engine_config: EngineConfig,
    quiet: bool,
) -> None:
    """Generate A/B propensity items, keeping only valid, distinct, unleaked ones.

    Each generation is parsed (SCENARIO/ALIGNED/MISALIGNED lines) and validated
    as `gen eval` validates a set; failures are counted by reason in the
    manifest and kept with their text in rejected.jsonl. A small model fails
    most items: the counts say so.

    \b
    Examples:
      gen evalset --limit 8 --out out/evalset-demo
      gen evalset --engine vllm --model Qwen/Qwen2.5-72B-Instruct --out out/items \\
          --against out/alignment-stories
    """
    from generator.evals import check_item_families, generate_eval_set
    from generator.mix import load_mix
    from generator.prompts import TemplateLibrary

    library = TemplateLibrary(templates_dir)
    mix = load_mix(mix_ref, library).with_overrides(seed=seed, max_tokens=max_tokens)
    check_item_families(mix, library)  # before a model is loaded
    engine = create_engine(engine_config)
    total = min(mix.documents, limit or mix.documents)
    try:
        with _bar(total, "generating", quiet) as advance:
            manifest = generate_eval_set(
                mix, library, engine, out, limit=limit, against=against, progress=advance
            )
    finally:
        engine.close()
    counts = manifest["counts"]
    failed = ", ".join(f"{n} {r}" for r, n in counts["failed_validation"].items()) or "none"
    click.echo(
        f"{out}: {counts['kept']} of {counts['generated']} items kept; "
        f"{counts['unparseable']} unparseable, {counts['engine_errors']} engine errors, "
        f"failed validation: {failed}; {counts['duplicates']} near-duplicates, "
        f"{counts['overlapping']} overlapping the build"
    )
    click.echo(json.dumps({"evalset": counts}))
