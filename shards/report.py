"""A self-contained HTML report of a build: one file, inline SVG plots, no network.

Plots are drawn as SVG by this module rather than by a plotting library, so
the file opens anywhere, offline, and adds no dependency. Every value taken
from the data is HTML-escaped.
"""

from __future__ import annotations

import html
import json
from pathlib import Path
from typing import Any

from shards.inspect import BuildView, Histogram
from shards.writer import atomic_path

PALETTE = ["#3465a4", "#f57900", "#4e9a06", "#cc0000", "#75507b", "#c4a000", "#06989a"]

CSS = """
body { font: 15px/1.5 system-ui, sans-serif; margin: 2rem auto; max-width: 72rem; color: #222; }
h1 { font-size: 1.5rem; } h2 { font-size: 1.15rem; margin-top: 2rem; }
table { border-collapse: collapse; width: 100%; }
th, td { text-align: left; padding: .3rem .6rem; border-bottom: 1px solid #ddd; }
td { vertical-align: top; }
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
    with atomic_path(path) as tmp:
        tmp.write_text(render_report(view, summary, samples), encoding="utf-8")


def render_report(view: BuildView, summary: dict[str, Any], samples: list[dict[str, Any]]) -> str:
    manifest = summary["manifest"] or {}
    title = manifest.get("mix", {}).get("name") or ", ".join(p.name for p in view.shard_paths[:3])
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
        _samples(samples),
    ]
    return (
        '<!doctype html>\n<html lang="en"><head><meta charset="utf-8">'
        f"<title>{_e(title)}: build report</title><style>{CSS}</style></head><body>"
        + "".join(sections)
        + f"<script>{SCRIPT}</script></body></html>\n"
    )


def _e(value: Any) -> str:
    return html.escape(str(value), quote=True)


def _overview(summary: dict[str, Any], manifest: dict[str, Any]) -> str:
    rows = [("rows", f"{summary['rows']:,}"), ("tokens", f"{summary['tokens']:,}")]
    if manifest:
        rows += [
            ("engine", manifest.get("engine", "")),
            ("model", manifest.get("model", {}).get("name", "")),
            ("seed", manifest.get("seed", "")),
            ("templates", ", ".join(manifest.get("templates", {}).values())),
            ("config hash", manifest.get("config_hash", "")[:16]),
        ]
        counts = manifest.get("counts", {})
        rows.append(("generated", f"{counts.get('generated', 0):,}"))
    if summary["dropped"] is not None:
        dropped = ", ".join(f"{n:,} {reason}" for reason, n in summary["dropped"].items())
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


def _svg_open(width: int, height: int) -> str:
    return f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" role="img">'


def _number(value: Any) -> str:
    return format(value, ".3g") if isinstance(value, float) else str(value)


def _diversity(diversity: dict[str, Any] | None) -> str:
    if not diversity:
        return "<h2>Diversity</h2><p>This build's manifest has no diversity figures.</p>"
    rows = "".join(
        f"<tr><th>{_e(key)}</th><td><pre>{_e(json.dumps(value, indent=1, ensure_ascii=False))}"
        "</pre></td></tr>"
        for key, value in diversity.items()
    )
    return f'<h2>Diversity</h2><table id="diversity">{rows}</table>'


def _samples(samples: list[dict[str, Any]]) -> str:
    score_names = sorted({k for row in samples for k in row if k.startswith("score_")})
    head = "".join(f'<th class="num">{_e(n)}</th>' for n in score_names)
    rows = []
    for row in samples:
        scores = "".join(f'<td class="num">{_e(_number(row[n]))}</td>' for n in score_names)
        axes = json.loads(row["axes"])
        axes_text = "; ".join(
            f"{k}: {', '.join(v) if isinstance(v, list) else v}" for k, v in axes.items()
        )
        rows.append(
            f"<tr><td><code>{_e(row['id'][:12])}</code></td><td>{_e(row['family'])}</td>"
            f'<td class="num">{row["n_tokens"]:,}</td>{scores}<td><details><summary>'
            f"{_e(row['text'][:160])}...</summary><pre>{_e(row['text'])}</pre>"
            f"<p><b>axes</b> {_e(axes_text)}</p><pre>{_e(row['prompt'])}</pre></details></td></tr>"
        )
    return (
        f"<h2>Sample documents ({len(samples)})</h2>"
        '<input id="filter" type="search" placeholder="Filter the samples">'
        '<table id="samples"><thead><tr><th>id</th><th>family</th>'
        f'<th class="num">tokens</th>{head}<th>document</th></tr></thead>'
        f"<tbody>{''.join(rows)}</tbody></table>"
    )
