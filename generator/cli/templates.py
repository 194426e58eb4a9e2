"""`gen templates`: list families and render their prompts, no model needed."""

from __future__ import annotations

import json
from pathlib import Path

import click

from generator.cli.common import templates_option, user_errors


@click.group()
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
    "--jsonl",
    is_flag=True,
    help="One JSON object per line: index, family, template, axes, system, prompt.",
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
                "system": rendered.system,
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


@templates.command("stats")
@templates_option
@click.option("--mix", "mix_ref", default="alignment-stories", show_default=True)
@click.option("--n", "count", type=click.IntRange(min=1), default=10000, show_default=True)
@click.option("--seed", type=click.IntRange(min=0), default=None, help="Default: the mix's seed.")
@click.option("--top", type=click.IntRange(min=1), default=1, show_default=True)
@click.option("--json", "as_json", is_flag=True, help="One JSON object instead of a table.")
@user_errors
def templates_stats(
    templates_dir: Path | None,
    mix_ref: str,
    count: int,
    seed: int | None,
    top: int,
    as_json: bool,
) -> None:
    """Plan N documents of a mix (no model) and report how concentrated they are:
    the share of the most frequent value of every axis and draw, and how often a
    full combination of values repeats.

    \b
    Example:
      gen templates stats --mix alignment-stories --n 100000
    """
    from generator.mix import load_mix
    from generator.prompts import Planner, TemplateLibrary, plan_stats

    library = TemplateLibrary(templates_dir)
    mix = load_mix(mix_ref, library)
    planner = Planner(library, dict(mix.families), mix.seed if seed is None else seed)
    stats = plan_stats(planner, range(count), top=top)
    if as_json:
        click.echo(json.dumps(stats, ensure_ascii=False))
        return
    click.echo(
        f"{stats['documents']} documents planned: "
        + ", ".join(f"{name} {n}" for name, n in sorted(stats["families"].items()))
    )
    click.echo(f"{'axis or draw':<22} {'distinct':>9} {'top share':>10}  most frequent value")
    for name, axis in stats["axes"].items():
        for rank, entry in enumerate(axis["top"]):
            label = name if rank == 0 else ""
            distinct = f"{axis['distinct']:>9}" if rank == 0 else " " * 9
            value = entry["value"] if len(entry["value"]) <= 60 else entry["value"][:57] + "..."
            click.echo(f"{label:<22} {distinct} {entry['share']:>9.3%}  {value}")
    full, most = stats["repeated_combinations"], stats["max_combination_repeats"]
    curated, most_curated = (
        stats["repeated_axis_combinations"],
        stats["max_axis_combination_repeats"],
    )
    click.echo(
        f"full combinations repeated: {full} (at most {most} times); "
        f"curated axes alone: {curated} (at most {most_curated} times)"
    )
