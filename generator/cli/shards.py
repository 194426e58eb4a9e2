"""`gen inspect` and `gen export`: reading builds back, reporting on them, publishing them.

Registered on the `gen` group by `generator.cli`. Heavy imports stay inside the
commands so `gen --help` stays instant.
"""

from __future__ import annotations

import sys
import textwrap
from pathlib import Path
from typing import Any

import click

from generator.cli.common import user_errors

SPARK = " ▁▂▃▄▅▆▇█"


LISTED_IDS = 20
SAMPLES_WITH_WHERE = 3


@click.command()
@click.argument("paths", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option("--sample", "sample_n", type=click.IntRange(min=1), help="Show N documents.")
@click.option("--seed", type=int, default=0, show_default=True, help="Which N documents.")
@click.option("--family", help="Only documents of this family.")
@click.option(
    "--where",
    "where",
    help='A filter such as "score_quality >= 0.7 and n_tokens > 300" or "score_alignment is null".',
)
@click.option("--id", "row_id", help="Show the one document with this id.")
@click.option(
    "--dropped",
    is_flag=True,
    help="Read the rows the build dropped (OUT/dropped/), each with its drop_reason.",
)
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
    dropped: bool,
    html_path: Path | None,
) -> None:
    """Summarise a build (a folder, its manifest.json or shard files) and show documents.

    --where takes column names, literals, == != < <= > >=, "is null", "is not null",
    and, or, not and parentheses; it is parsed, never run as code.

    \b
    Examples:
      gen inspect out/demo
      gen inspect out/demo --sample 3 --seed 1 --family technical-report
      gen inspect out/demo --where "score_quality >= 0.7 and n_tokens > 300"
      gen inspect out/demo --dropped --where "drop_reason == 'near-duplicate'"
      gen inspect out/demo --html report.html
    """
    from shards.inspect import open_build, sample_rows, select, summarize

    view = open_build(list(paths), dropped=dropped)
    selected = select(view, where=where, family=family, row_id=row_id)
    filtered = where is not None or family is not None
    if html_path is not None:
        from shards.report import write_report

        write_report(html_path, view, summarize(view), sample_rows(selected, 50, seed))
        click.echo(f"wrote {html_path}")
    if row_id is not None:
        if selected.num_rows == 0:
            raise click.ClickException(f"no document with id {row_id}")
        _print_documents(view, selected.to_pylist())
    elif sample_n is not None:
        _print_documents(view, sample_rows(selected, sample_n, seed))
    elif filtered:
        click.echo(_render_matches(selected, view.table.num_rows))
        if selected.num_rows:
            click.echo("")
            _print_documents(view, sample_rows(selected, SAMPLES_WITH_WHERE, seed))
    elif html_path is None:
        click.echo(_render_summary(summarize(view), paths, dropped))


def _render_matches(selected: Any, total: int) -> str:
    """The count, then the matching ids with the columns one filters on."""
    lines = [f"matching --where/--family: {selected.num_rows:,} of {total:,} rows"]
    if not selected.num_rows:
        return "\n".join(lines)
    scores = [c for c in selected.column_names if c.startswith("score_")]
    extra = ["drop_reason"] if "drop_reason" in selected.column_names else []
    head = f"{'id':<34}{'family':<22}{'tokens':>7}" + "".join(f"{c[6:]:>12}" for c in scores)
    lines += ["", head + "".join(f"  {c}" for c in extra)]
    for row in selected.slice(0, LISTED_IDS).to_pylist():
        line = f"{row['id']:<34}{_clip(row['family'], 21):<22}{row['n_tokens']:>7}"
        line += "".join(f"{_score(row[c]):>12}" for c in scores)
        line += "".join(f"  {_clip(str(row[c]), 30)}" for c in extra)
        lines.append(line)
    if selected.num_rows > LISTED_IDS:
        lines.append(
            f"... and {selected.num_rows - LISTED_IDS:,} more (--sample N shows N of them in full)"
        )
    lines += ["", f"{min(SAMPLES_WITH_WHERE, selected.num_rows)} of them (--seed picks others):"]
    return "\n".join(lines)


def _score(value: Any) -> str:
    return "missing" if value is None else f"{value:.3g}"


def _clip(text: str, width: int) -> str:
    """One printable line of at most `width` characters, cut at a word where possible."""
    text = "".join(ch if ch.isprintable() else " " for ch in text)
    text = " ".join(text.split())
    if len(text) <= width:
        return text
    cut = text[: width - 3].rsplit(" ", 1)[0] if " " in text[: width - 3] else text[: width - 3]
    return cut + "..."


def _render_summary(summary: dict[str, Any], paths: tuple[Path, ...], dropped: bool) -> str:
    where = ", ".join(str(p) for p in paths)
    kind = "dropped rows" if dropped else "rows"
    lines = [f"{where}: {summary['rows']:,} {kind}, {summary['tokens']:,} tokens", ""]
    lines.append(f"{'family':<24}{'documents':>12}{'tokens':>14}")
    for name, figures in summary["per_family"].items():
        lines.append(f"{_clip(name, 23):<24}{figures['documents']:>12,}{figures['tokens']:>14,}")
    if summary["dropped"] is not None:
        dropped_text = ", ".join(f"{n:,} {reason}" for reason, n in summary["dropped"].items())
        lines += ["", f"dropped: {dropped_text or 'none'}"]
    if summary["distributions"]:
        lines.append("")
        for name, hist in summary["distributions"].items():
            lines.append(
                f"{name:<18} min {hist.minimum:<9.4g} mean {hist.mean:<9.4g} "
                f"max {hist.maximum:<9.4g} {_sparkline(hist.counts)}"
            )
    for name, nulls in summary["null_scores"].items():
        lines.append(f"{name:<18} {nulls:,} missing (judge replies that could not be parsed)")
    if summary["diversity"]:
        lines += ["", *_diversity_lines(summary["diversity"])]
    return "\n".join(lines)


def _diversity_lines(diversity: dict[str, Any], width: int = 62) -> list[str]:
    """Figures one per line, top-N lists as small tables, every line whole and within
    80 columns."""
    measured = diversity.get("documents_measured")
    head = f"diversity (of {measured:,} documents):" if isinstance(measured, int) else "diversity:"
    figures, tables = [head], []
    for key, value in diversity.items():
        if key == "documents_measured":
            continue
        label = key.replace("_", " ")
        if isinstance(value, list) and all(isinstance(v, dict) for v in value):
            tables += ["", f"  {label:<{width}}{'share':>8}{'count':>8}"]
            for item in value:
                share = item.get("share")
                share_text = f"{share:.1%}" if isinstance(share, (int, float)) else "-"
                count = item.get("count")
                lines_text = _clip(str(item.get("text", "")), width - 4)
                count_text = f"{count:,}" if isinstance(count, int) else "-"
                tables.append(f"    {lines_text:<{width - 2}}{share_text:>8}{count_text:>8}")
        elif isinstance(value, dict):
            tables += ["", f"  {label}:"]
            for name, inner in value.items():
                text = _pairs(inner) if isinstance(inner, dict) else _figure(inner, str(name))
                tables += textwrap.wrap(
                    text,
                    width=78,
                    initial_indent=f"    {name}: ",
                    subsequent_indent=" " * 6,
                    break_on_hyphens=False,
                )
        else:
            figures.append(f"  {label:<32}{_clip(_figure(value, key), width)}")
    return figures + tables


def _pairs(values: dict[str, Any]) -> str:
    return ", ".join(f"{str(k).replace('_', ' ')} {_figure(v, str(k))}" for k, v in values.items())


def _figure(value: Any, key: str = "") -> str:
    """A figure as a person reads it: shares as percentages, counts with separators."""
    if key.endswith("share") and isinstance(value, (int, float)) and not isinstance(value, bool):
        return f"{value:.1%}"
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, int) and not isinstance(value, bool):
        return f"{value:,}"
    return "missing" if value is None else str(value)


def _sparkline(counts: list[int]) -> str:
    top = max(counts) or 1
    return "".join(SPARK[0 if c == 0 else 1 + (c * (len(SPARK) - 2)) // top] for c in counts)


def _print_documents(view: Any, rows: list[dict[str, Any]]) -> None:
    from rich.console import Console, Group
    from rich.panel import Panel
    from rich.table import Table
    from rich.text import Text

    from shards.inspect import row_axes

    console = Console()
    panels = []
    for row in rows:
        axes = row_axes(view, row)
        facts = Table.grid(padding=(0, 2))
        facts.add_column(style="bold cyan", no_wrap=True)
        facts.add_column()
        facts.add_row("family", f"{row['family']} ({row['template']})")
        facts.add_row("tokens", f"{row['n_tokens']} ({row['finish_reason']})")
        if "drop_reason" in row:
            facts.add_row("dropped", str(row["drop_reason"]))
        for name, value in sorted(row.items()):
            if name.startswith("score_"):
                facts.add_row(name, _score(value))
        for axis, value in axes.items():
            text = ", ".join(map(str, value)) if isinstance(value, list) else str(value)
            facts.add_row(str(axis), text)
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

    from shards.export import (
        CardOptions,
        resolve_token,
        upload_repository,
        validate_repo_id,
        write_repository,
    )
    from shards.inspect import open_build

    if repo_id is None and local_dir is None:
        raise click.UsageError("give --repo-id to upload, or --local-dir to write a folder")
    if repo_id is not None:
        validate_repo_id(repo_id)
    view = open_build(list(paths), checksums=True)
    card = CardOptions(repo_id=repo_id, license=license_id)
    if local_dir is not None:
        files = write_repository(view, local_dir, fmt, card)
        click.echo(f"{local_dir}: {len(files)} {fmt} file(s), README.md and mixing.json")
        return
    assert repo_id is not None
    token = resolve_token()
    from huggingface_hub import HfApi

    with tempfile.TemporaryDirectory(prefix="gen-export-") as tmp:
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
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["arrow", "parquet"]),
    help="Output format  [default: Parquet when every input is Parquet, else Arrow]",
)
@user_errors
def dedup(
    paths: tuple[Path, ...],
    out: Path,
    threshold: float,
    ngram: int,
    num_perm: int,
    fmt: str | None,
) -> None:
    """Near-deduplicate Arrow or Parquet files (or folders of them) that have a `text` column.

    Keeps the first row of each cluster, in input order, with all its columns.

    \b
    Example:
      gen dedup corpus/*.parquet --out corpus-dedup --threshold 0.8
      gen dedup shards/ --out deduped --format parquet
    """
    from filters.dedup import DedupConfig, dedup_files

    config = DedupConfig(threshold=threshold, ngram=ngram, num_perm=num_perm)
    report = dedup_files(list(paths), out, config, **_format_argument(paths, fmt))
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
    default="quality,repetition,slop,chatter,opening",
    show_default=True,
    help="Comma-separated scorer names.",
)
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["arrow", "parquet"]),
    help="Output format  [default: Parquet when every input is Parquet, else Arrow]",
)
@user_errors
def score(paths: tuple[Path, ...], out: Path, scorers: str, fmt: str | None) -> None:
    """Add score_<name> columns to Arrow or Parquet files (or folders) with a `text` column.

    \b
    Example:
      gen score corpus/*.parquet --out corpus-scored --scorers quality,slop
    """
    from filters.scorers import score_files

    names = [n.strip() for n in scorers.split(",") if n.strip()]
    report = score_files(list(paths), out, names, **_format_argument(paths, fmt))
    summary = ", ".join(
        f"{n} mean {s['mean']:.3g}" for n, s in report["scorers"].items() if s["mean"] is not None
    )
    click.echo(f"{out}: scored {report['rows']:,} rows ({summary or 'no rows'})")


def _format_argument(paths: tuple[Path, ...], requested: str | None) -> dict[str, str]:
    """`format=` for `score_files` / `dedup_files`: the one asked for, else the inputs'
    own (Parquet only when every input is Parquet)."""
    from shards.format import foreign_files, output_format

    return {"format": output_format(foreign_files(list(paths)), requested)}
