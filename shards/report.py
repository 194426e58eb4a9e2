"""A self-contained HTML report of a build: one file, inline SVG plots, no network.

Plots are drawn as SVG by this module rather than by a plotting library, so
the file opens anywhere, offline, and adds no dependency. Every value taken
from the data is HTML-escaped.
"""

from __future__ import annotations

import html
from pathlib import Path
from typing import Any

from generator.errors import ShardError
from shards.inspect import BuildView, Histogram, row_axes
from shards.manifest import Manifest
from shards.writer import atomic_path

PALETTE = ["#3465a4", "#f57900", "#4e9a06", "#cc0000", "#75507b", "#c4a000", "#06989a"]

CSS = """
body { font: 15px/1.5 system-ui, sans-serif; margin: 2rem auto; max-width: 72rem; color: #222; }
h1 { font-size: 1.5rem; } h2 { font-size: 1.15rem; margin-top: 2rem; }
table { border-collapse: collapse; width: 100%; }
th, td { text-align: left; padding: .3rem .6rem; border-bottom: 1px solid #ddd; }
td { vertical-align: top; }
#samples { table-layout: fixed; }
#samples col.meta { width: 13rem; } #samples col.doc { width: auto; }
#samples td.doc { overflow-wrap: anywhere; }
#samples td.doc pre { max-height: 28rem; overflow: auto; margin: .4rem 0; }
dl.facts { display: grid; grid-template-columns: auto 1fr; gap: 0 .6rem; margin: 0; }
dl.facts { font-size: .85rem; }
dl.facts dt { color: #555; } dl.facts dd { margin: 0; font-variant-numeric: tabular-nums; }
.missing { color: #999; }
table.figures { width: auto; } table.figures th { white-space: nowrap; padding-right: 2rem; }
table.shares td.text { max-width: 40rem; }
td.num, th.num { text-align: right; font-variant-numeric: tabular-nums; }
.plots { display: flex; flex-wrap: wrap; gap: 1.5rem; }
figure { margin: 0; } figcaption { font-size: .85rem; color: #555; }
details summary { cursor: pointer; }
pre { white-space: pre-wrap; background: #f6f6f6; padding: .6rem; }
#filter { width: 100%; padding: .4rem; margin: .5rem 0; font-size: 1rem; }
"""

SCRIPT = """
document.getElementById('filter').addEventListener('input', function (event) {
  const needle = event.target.value.toLowerCase();
  for (const row of document.querySelectorAll('#samples tbody tr')) {
    row.hidden = needle !== '' && !row.textContent.toLowerCase().includes(needle);
  }
});
"""


def write_report(
    path: Path, view: BuildView, summary: dict[str, Any], samples: list[dict[str, Any]]
) -> None:
    """Write the report atomically; a missing folder or an unwritable path is one line."""
    if not path.parent.is_dir():
        raise ShardError(f"{path}: the folder {path.parent} does not exist")
    page = render_report(view, summary, samples)
    try:
        with atomic_path(path) as tmp:
            tmp.write_text(page, encoding="utf-8")
    except OSError as exc:
        raise ShardError(f"{path}: cannot write the report ({exc.strerror or exc})") from None


def render_report(view: BuildView, summary: dict[str, Any], samples: list[dict[str, Any]]) -> str:
    manifest = summary["manifest"]
    title = (manifest.mix.get("name") if manifest else None) or ", ".join(
        p.name for p in view.shard_paths[:3]
    )
    if view.dropped:
        title = f"{title}: dropped rows"
    families = summary["per_family"]
    plots = [
        _figure(
            "Documents per family",
            _bars([(name, f["documents"]) for name, f in families.items()]),
        ),
        _figure("Tokens per family", _bars([(name, f["tokens"]) for name, f in families.items()])),
    ]
    for name, hist in summary["distributions"].items():
        plots.append(_figure(f"Distribution of {name}", _histogram(hist)))
    sections = [
        f"<h1>{_e(title)}</h1>",
        _overview(summary, manifest),
        '<h2>Plots</h2><div class="plots">' + "".join(plots) + "</div>",
        _diversity(summary["diversity"]),
        _samples(view, samples),
    ]
    return (
        '<!doctype html>\n<html lang="en"><head><meta charset="utf-8">'
        f"<title>{_e(title)}: build report</title><style>{CSS}</style></head><body>"
        + "".join(sections)
        + f"<script>{SCRIPT}</script></body></html>\n"
    )


def _e(value: Any) -> str:
    return html.escape(str(value), quote=True)


def _overview(summary: dict[str, Any], manifest: Manifest | None) -> str:
    rows = [("rows", f"{summary['rows']:,}"), ("tokens", f"{summary['tokens']:,}")]
    if manifest is not None:
        rows += [
            ("engine", manifest.engine),
            ("model", manifest.model.get("name", "")),
            ("seed", manifest.seed),
            ("templates", ", ".join(map(str, manifest.templates.values()))),
            ("config hash", manifest.config_hash[:16]),
        ]
        generated = manifest.counts.get("generated")
        rows.append(("generated", _number(generated)))
    if summary["dropped"] is not None:
        dropped = ", ".join(f"{_number(n)} {reason}" for reason, n in summary["dropped"].items())
        rows.append(("dropped", dropped or "none"))
    body = "".join(f"<tr><th>{_e(k)}</th><td>{_e(v)}</td></tr>" for k, v in rows)
    family_rows = "".join(
        f'<tr><td>{_e(name)}</td><td class="num">{f["documents"]:,}</td>'
        f'<td class="num">{f["tokens"]:,}</td></tr>'
        for name, f in summary["per_family"].items()
    )
    return (
        f'<h2>Overview</h2><table id="overview">{body}</table>'
        '<h2>Families</h2><table id="families"><thead><tr><th>family</th>'
        '<th class="num">documents</th><th class="num">tokens</th></tr></thead>'
        f"<tbody>{family_rows}</tbody></table>"
    )


def _figure(caption: str, svg: str) -> str:
    return f'<figure class="plot">{svg}<figcaption>{_e(caption)}</figcaption></figure>'


def _bars(items: list[tuple[str, int]], width: int = 420, bar: int = 26) -> str:
    """Horizontal bars, one per label."""
    top = max((v for _, v in items), default=0) or 1
    height = bar * len(items) + 10
    label_w = 150
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" role="img">'
    ]
    for i, (label, value) in enumerate(items):
        y = 5 + i * bar
        w = (width - label_w - 70) * value / top
        color = PALETTE[i % len(PALETTE)]
        parts.append(
            f'<text x="{label_w - 6}" y="{y + bar * 0.65:.1f}" text-anchor="end" '
            f'font-size="12">{_e(label)}</text>'
            f'<rect x="{label_w}" y="{y + 3}" width="{w:.1f}" height="{bar - 8}" fill="{color}">'
            f"<title>{_e(label)}: {value:,}</title></rect>"
            f'<text x="{label_w + w + 4:.1f}" y="{y + bar * 0.65:.1f}" font-size="12">'
            f"{value:,}</text>"
        )
    parts.append("</svg>")
    return "".join(parts)


def _histogram(hist: Histogram, width: int = 420, height: int = 160) -> str:
    top = max(hist.counts) or 1
    n = len(hist.counts)
    plot_w, plot_h, left, bottom = width - 20, height - 40, 10, height - 25
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" role="img">'
    ]
    for i, count in enumerate(hist.counts):
        h = plot_h * count / top
        x = left + i * plot_w / n
        lo, hi = hist.edges[i], hist.edges[i + 1]
        parts.append(
            f'<rect x="{x:.1f}" y="{bottom - h:.1f}" width="{plot_w / n - 1:.1f}" '
            f'height="{h:.1f}" fill="{PALETTE[0]}">'
            f"<title>{lo:.4g} to {hi:.4g}: {count:,}</title></rect>"
        )
    parts.append(
        f'<text x="{left}" y="{height - 8}" font-size="11">{hist.minimum:.4g}</text>'
        f'<text x="{left + plot_w}" y="{height - 8}" font-size="11" text-anchor="end">'
        f"{hist.maximum:.4g}</text>"
        f'<text x="{left + plot_w / 2}" y="{height - 8}" font-size="11" text-anchor="middle">'
        f"mean {hist.mean:.4g}</text></svg>"
    )
    return "".join(parts)


def _number(value: Any) -> str:
    if value is None:
        return MISSING
    if isinstance(value, float):
        return format(value, ".3g")
    if isinstance(value, int) and not isinstance(value, bool):
        return f"{value:,}"
    return str(value)


MISSING = "\u2014"  # an em dash: the value is missing, not zero or "None"


def _diversity(diversity: dict[str, Any] | None) -> str:
    """Scalars in one table; each top-N list as a table whose shares are drawn as bars."""
    if not diversity:
        return "<h2>Diversity</h2><p>This build's manifest has no diversity figures.</p>"
    scalars, lists = [], []
    for key, value in diversity.items():
        label = key.replace("_", " ")
        if isinstance(value, list) and all(isinstance(v, dict) for v in value):
            lists.append(_shares_table(label, value))
        elif isinstance(value, dict) and all(isinstance(v, dict) for v in value.values()):
            lists.append(_nested_table(label, value))
        elif isinstance(value, dict):
            text = ", ".join(f"{k}: {_figure_for(k, v)}" for k, v in value.items())
            scalars.append(f"<tr><th>{_e(label)}</th><td>{_e(text)}</td></tr>")
        else:
            scalars.append(
                f'<tr><th>{_e(label)}</th><td class="num">{_e(_figure_for(key, value))}</td></tr>'
            )
    return (
        '<h2>Diversity</h2><table id="diversity" class="figures">'
        + "".join(scalars)
        + "</table>"
        + "".join(lists)
    )


def _figure_for(key: Any, value: Any) -> str:
    """Shares as percentages, everything else as a number or text."""
    if str(key).endswith("share") and isinstance(value, (int, float)):
        return f"{value:.1%}"
    return _number(value)


def _nested_table(label: str, rows: dict[str, dict[str, Any]]) -> str:
    """One row per entry (e.g. per seed kind), one column per figure."""
    columns = list(dict.fromkeys(k for inner in rows.values() for k in inner))
    head = "".join(f"<th>{_e(str(c).replace('_', ' '))}</th>" for c in columns)
    body = "".join(
        f"<tr><th>{_e(name)}</th>"
        + "".join(f"<td>{_e(_figure_for(c, inner.get(c)))}</td>" for c in columns)
        + "</tr>"
        for name, inner in rows.items()
    )
    return (
        f'<h3>{_e(label)}</h3><table class="nested"><thead><tr><th></th>{head}</tr></thead>'
        f"<tbody>{body}</tbody></table>"
    )


def _shares_table(label: str, items: list[dict[str, Any]], bar_width: int = 120) -> str:
    rows = []
    for item in items:
        share = item.get("share")
        width = bar_width * share if isinstance(share, (int, float)) else 0
        bar = (
            f'<svg xmlns="http://www.w3.org/2000/svg" width="{bar_width}" height="12" role="img">'
            f'<rect x="0" y="1" width="{max(min(width, bar_width), 0):.1f}" height="10" '
            f'fill="{PALETTE[0]}"></rect></svg>'
        )
        percent = f"{share:.1%}" if isinstance(share, (int, float)) else MISSING
        rows.append(
            f'<tr><td class="text">{_e(item.get("text", ""))}</td>'
            f'<td class="num">{_e(_number(item.get("count")))}</td>'
            f'<td class="num">{percent}</td><td>{bar}</td></tr>'
        )
    return (
        f'<h3>{_e(label)}</h3><table class="shares"><thead><tr><th>text</th>'
        '<th class="num">documents</th><th class="num">share</th><th></th></tr></thead>'
        f"<tbody>{''.join(rows)}</tbody></table>"
    )


def _samples(view: BuildView, samples: list[dict[str, Any]]) -> str:
    """Facts in a narrow column, the document in a wide one that wraps and scrolls."""
    score_names = sorted({k for row in samples for k in row if k.startswith("score_")})
    rows = []
    for row in samples:
        axes = row_axes(view, row)
        axes_text = "; ".join(
            f"{k}: {', '.join(map(str, v)) if isinstance(v, list) else v}" for k, v in axes.items()
        )
        facts = [("id", row["id"][:12]), ("family", row["family"]), ("tokens", row["n_tokens"])]
        if "drop_reason" in row:
            facts.append(("dropped", row["drop_reason"]))
        facts += [(name[6:], row.get(name)) for name in score_names]
        facts_html = "".join(
            f"<dt>{_e(k)}</dt>"
            + (
                f'<dd class="missing" title="missing">{MISSING}</dd>'
                if v is None
                else f"<dd>{_e(_number(v))}</dd>"
            )
            for k, v in facts
        )
        preview = " ".join(row["text"][:240].split())
        rows.append(
            f'<tr><td><dl class="facts">{facts_html}</dl></td><td class="doc"><details>'
            f"<summary>{_e(preview)}...</summary><pre>{_e(row['text'])}</pre>"
            f"<p><b>axes</b> {_e(axes_text)}</p><p><b>prompt</b></p>"
            f"<pre>{_e(row['prompt'])}</pre></details></td></tr>"
        )
    return (
        f"<h2>Sample documents ({len(samples)})</h2>"
        '<input id="filter" type="search" placeholder="Filter the samples">'
        '<table id="samples"><colgroup><col class="meta"><col class="doc"></colgroup>'
        "<thead><tr><th>facts</th><th>document (click to read)</th></tr></thead>"
        f"<tbody>{''.join(rows)}</tbody></table>"
    )
