"""`gen inspect` and `gen export`: reading builds back, reporting on them, publishing them.

Registered on the `gen` group by `generator.cli`. Heavy imports stay inside the
commands so `gen --help` stays instant.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import click

from generator.cli.common import user_errors

SPARK = " ▁▂▃▄▅▆▇█"


@click.command()
@click.argument("paths", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option("--sample", "sample_n", type=click.IntRange(min=1), help="Show N documents.")
@click.option("--seed", type=int, default=0, show_default=True, help="Which N documents.")
@click.option("--family", help="Only documents of this family.")
@click.option(
    "--where", "where", help='A filter such as "score_aesthetic >= 7 and n_tokens > 300".'
)
@click.option("--id", "row_id", help="Show the one document with this id.")
@click.option(
    "--html",
    "html_path",
    type=click.Path(path_type=Path, dir_okay=False),
    help="Write a self-contained HTML report here.",
)
@user_errors
def inspect(
    paths: tuple[Path, ...],
    sample_n: int | None,
    seed: int,
    family: str | None,
    where: str | None,
    row_id: str | None,
    html_path: Path | None,
) -> None:
    """Summarise a build (a folder, its manifest.json or shard files) and show documents.

    \b
    Examples:
      gen inspect out/demo
      gen inspect out/demo --sample 3 --seed 1 --family technical-report
      gen inspect out/demo --where "n_tokens > 500" --sample 2
      gen inspect out/demo --html report.html
    """
    from shards.inspect import open_build, sample_rows, select, summarize

    view = open_build(list(paths))
    selected = select(view, where=where, family=family, row_id=row_id)
    filtered = where is not None or family is not None
    if html_path is not None:
        from shards.report import write_report

        write_report(html_path, view, summarize(view), sample_rows(selected, 50, seed))
        click.echo(f"wrote {html_path}")
    if row_id is not None:
        if selected.num_rows == 0:
            raise click.ClickException(f"no document with id {row_id}")
        _print_documents(selected.to_pylist())
    elif sample_n is not None:
        _print_documents(sample_rows(selected, sample_n, seed))
    elif html_path is None:
        click.echo(_render_summary(summarize(view), paths))
        if filtered:
            click.echo(f"\nmatching --where/--family: {selected.num_rows} rows")


def _render_summary(summary: dict[str, Any], paths: tuple[Path, ...]) -> str:
    where = ", ".join(str(p) for p in paths)
    lines = [f"{where}: {summary['rows']:,} rows, {summary['tokens']:,} tokens", ""]
    lines.append(f"{'family':<24}{'documents':>12}{'tokens':>14}")
    for name, figures in summary["per_family"].items():
        lines.append(f"{name:<24}{figures['documents']:>12,}{figures['tokens']:>14,}")
    if summary["dropped"] is not None:
        dropped = ", ".join(f"{n:,} {reason}" for reason, n in summary["dropped"].items())
        lines += ["", f"dropped: {dropped or 'none'}"]
    if summary["distributions"]:
        lines.append("")
        for name, hist in summary["distributions"].items():
            lines.append(
                f"{name:<18} min {hist.minimum:<9.4g} mean {hist.mean:<9.4g} "
                f"max {hist.maximum:<9.4g} {_sparkline(hist.counts)}"
            )
    for name, nulls in summary["null_scores"].items():
        lines.append(f"{name:<18} {nulls:,} null (judge replies that could not be parsed)")
    diversity = summary["diversity"]
    if diversity:
        lines += ["", "diversity:"]
        lines += [f"  {key}: {json.dumps(value)[:100]}" for key, value in diversity.items()]
    return "\n".join(lines)


def _sparkline(counts: list[int]) -> str:
    top = max(counts) or 1
    return "".join(SPARK[0 if c == 0 else 1 + (c * (len(SPARK) - 2)) // top] for c in counts)


def _print_documents(rows: list[dict[str, Any]]) -> None:
    from rich.console import Console, Group
    from rich.panel import Panel
    from rich.table import Table
    from rich.text import Text

    console = Console()
    panels = []
    for row in rows:
        facts = Table.grid(padding=(0, 2))
        facts.add_column(style="bold cyan", no_wrap=True)
        facts.add_column()
        facts.add_row("family", f"{row['family']} ({row['template']})")
        facts.add_row("tokens", f"{row['n_tokens']} ({row['finish_reason']})")
        for name, value in sorted(row.items()):
            if name.startswith("score_"):
                facts.add_row(name, f"{value:.3g}" if isinstance(value, float) else str(value))
        for axis, value in json.loads(row["axes"]).items():
            facts.add_row(axis, ", ".join(value) if isinstance(value, list) else str(value))
        body = Group(
            facts,
            Text("\nprompt", style="bold cyan"),
            Text(row["prompt"], style="dim"),
            Text("\ntext", style="bold cyan"),
            Text(row["text"]),
        )
        panels.append(Panel(body, title=f"{row['id']}  #{row['doc_index']}", title_align="left"))
    if not panels:
        console.print("no documents match")
        return
    if console.is_terminal and sys.stdout.isatty():
        with console.pager(styles=True):
            console.print(*panels)
    else:
        console.print(*panels)


@click.command()
@click.argument("paths", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option("--repo-id", help="Upload to this Hugging Face dataset repository (ORG/NAME).")
@click.option(
    "--local-dir",
    type=click.Path(path_type=Path, file_okay=False),
    help="Write the repository here instead of uploading (no network).",
)
@click.option(
    "--format", "fmt", type=click.Choice(["parquet", "jsonl"]), default="parquet", show_default=True
)
@click.option("--private", is_flag=True, help="Create the Hub repository as private.")
@click.option(
    "--license",
    "license_id",
    default="other",
    show_default=True,
    help="License identifier for the dataset card (e.g. cc-by-4.0).",
)
@user_errors
def export(
    paths: tuple[Path, ...],
    repo_id: str | None,
    local_dir: Path | None,
    fmt: str,
    private: bool,
    license_id: str,
) -> None:
    """Convert a build to Parquet or JSONL with a dataset card, and upload it to the Hub.

    The token comes from HF_TOKEN or `hf auth login` and is never printed or written.

    \b
    Examples:
      gen export out/demo --repo-id my-org/alignment-stories --private
      gen export out/demo --repo-id my-org/alignment-stories --local-dir hub-repo
      gen export out/demo --format jsonl --local-dir mixing/alignment-stories
    """
    import tempfile

    from shards.export import CardOptions, resolve_token, upload_repository, write_repository
    from shards.inspect import open_build

    if repo_id is None and local_dir is None:
        raise click.UsageError("give --repo-id to upload, or --local-dir to write a folder")
    if repo_id is not None and repo_id.count("/") != 1:
        raise click.UsageError(f"--repo-id: expected ORG/NAME, got {repo_id!r}")
    view = open_build(list(paths))
    card = CardOptions(repo_id=repo_id, license=license_id)
    if local_dir is not None:
        files = write_repository(view, local_dir, fmt, card)
        click.echo(f"{local_dir}: {len(files)} {fmt} file(s), README.md and mixing.json")
        return
    assert repo_id is not None
    token = resolve_token()
    from huggingface_hub import HfApi

    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "repo"
        write_repository(view, folder, fmt, card)
        sent = upload_repository(folder, repo_id, private, HfApi(token=token))
    click.echo(f"uploaded {len(sent)} file(s) to https://huggingface.co/datasets/{repo_id}")


@click.command()
@click.argument("paths", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option(
    "--out",
    type=click.Path(path_type=Path, file_okay=False),
    required=True,
    help="A new folder for the kept rows and dedup-report.json.",
)
@click.option(
    "--threshold",
    type=click.FloatRange(0, 1, min_open=True),
    default=0.8,
    show_default=True,
    help="Jaccard similarity that makes a near-duplicate.",
)
@click.option(
    "--ngram", type=click.IntRange(min=1), default=5, show_default=True, help="Words per shingle."
)
@click.option(
    "--num-perm",
    type=click.IntRange(min=1),
    default=128,
    show_default=True,
    help="MinHash permutations.",
)
@user_errors
def dedup(paths: tuple[Path, ...], out: Path, threshold: float, ngram: int, num_perm: int) -> None:
    """Near-deduplicate Arrow or Parquet files (or folders of them) that have a `text` column.

    Keeps the first row of each cluster, in input order, with all its columns.

    \b
    Example:
      gen dedup corpus/*.parquet --out corpus-dedup --threshold 0.8
    """
    from filters.dedup import DedupConfig, dedup_files

    config = DedupConfig(threshold=threshold, ngram=ngram, num_perm=num_perm)
    report = dedup_files(list(paths), out, config)
    click.echo(
        f"{out}: kept {report['rows_kept']:,} of {report['rows_in']:,} rows "
        f"({report['near_duplicates']:,} near-duplicates in {len(report['clusters']):,} clusters)"
    )


@click.command()
@click.argument("paths", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option(
    "--out",
    type=click.Path(path_type=Path, file_okay=False),
    required=True,
    help="A new folder for the scored rows and score-report.json.",
)
@click.option(
    "--scorers",
    default="quality,repetition,slop,chatter",
    show_default=True,
    help="Comma-separated scorer names.",
)
@user_errors
def score(paths: tuple[Path, ...], out: Path, scorers: str) -> None:
    """Add score_<name> columns to Arrow or Parquet files (or folders) with a `text` column.

    \b
    Example:
      gen score corpus/*.parquet --out corpus-scored --scorers quality,slop
    """
    from filters.scorers import score_files

    names = [n.strip() for n in scorers.split(",") if n.strip()]
    report = score_files(list(paths), out, names)
    summary = ", ".join(
        f"{n} mean {s['mean']:.3g}" for n, s in report["scorers"].items() if s["mean"] is not None
    )
    click.echo(f"{out}: scored {report['rows']:,} rows ({summary or 'no rows'})")
