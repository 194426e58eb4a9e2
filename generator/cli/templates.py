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
