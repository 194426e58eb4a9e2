"""Exporting a build: Parquet or JSONL files, a dataset card, a mixing summary, the Hub.

`write_repository` lays out exactly what would be uploaded:

    data/train-00000-of-00003.parquet ...   one file per shard (zstd), or .jsonl
    mixing.json                              tokens per file and per family
    README.md                                dataset card with Hub YAML front matter

It is built in a temporary sibling folder and renamed into place, so the
target folder is either absent or complete. `upload_repository` sends it with
`huggingface_hub`, data files in batches of one commit each, skipping files the
repository already holds with the same sha256, so an interrupted upload of a
large set resumes where it stopped. The token comes from `HF_TOKEN` or the
standard Hugging Face login and is handed to `HfApi` only.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import yaml

from generator.errors import ShardError
from generator.records import file_sha256
from shards.inspect import BuildView, summarize
from shards.manifest import Manifest
from shards.writer import staged_folder

FORMATS = ("parquet", "jsonl")
UPLOAD_BATCH_FILES = 50


class ExportError(ShardError):
    pass


@dataclass(frozen=True)
class CardOptions:
    repo_id: str | None = None
    license: str = "other"
    language: str = "en"


def validate_repo_id(repo_id: str) -> str:
    """A Hub dataset id is ORG/NAME in the Hub's own alphabet; anything else (a path such
    as `../evil`, spaces) is refused before any work is done."""
    if len(repo_id) > 200 or not _REPO_ID.fullmatch(repo_id) or ".." in repo_id or "--" in repo_id:
        raise ExportError(
            f"--repo-id: {repo_id!r} is not ORG/NAME (letters, digits, '-', '_' and '.', "
            "starting and ending with a letter or digit, no '..' or '--')"
        )
    return repo_id


_REPO_ID = re.compile(
    r"[A-Za-z0-9](?:[\w.-]{0,94}[A-Za-z0-9])?/[A-Za-z0-9](?:[\w.-]{0,94}[A-Za-z0-9])?", re.ASCII
)


def write_repository(view: BuildView, target: Path, fmt: str, card: CardOptions) -> list[Path]:
    """Write the data files, mixing.json and README.md into `target`; returns the data files.

    `target` must be new or empty and outside the build; it appears complete or
    not at all. A build with no rows is refused: its repository would not load.
    """
    if fmt not in FORMATS:
        raise ExportError(f"--format: expected one of {', '.join(FORMATS)}, got {fmt!r}")
    if view.table.num_rows == 0:
        raise ExportError(
            f"{view.source}: 0 rows to export (every document was dropped; "
            "`gen inspect --dropped` shows why)"
        )
    _refuse_inside_build(view, target)
    with staged_folder(target) as staging:
        (staging / "data").mkdir()
        files = _write_data(view, staging, fmt)
        mixing = _mixing_summary(view, files)
        (staging / "mixing.json").write_text(json.dumps(mixing, indent=2) + "\n", encoding="utf-8")
        readme = dataset_card(view, fmt, card, mixing)
        (staging / "README.md").write_text(readme, encoding="utf-8")
    return [target / f["path"] for f in files]


def _refuse_inside_build(view: BuildView, target: Path) -> None:
    resolved = target.resolve()
    for folder in {path.parent.resolve() for path in view.shard_paths}:
        if resolved.is_relative_to(folder):
            raise ExportError(f"{target}: inside the build folder {folder}; export elsewhere")


def _write_data(view: BuildView, root: Path, fmt: str) -> list[dict[str, Any]]:
    """One data file per shard, from the tables `open_build` already read and checked;
    returns each file's rows and tokens (per family)."""
    total = len(view.parts)
    files = []
    for number, table in enumerate(view.parts):
        path = root / "data" / f"train-{number:05d}-of-{total:05d}.{fmt}"
        if fmt == "parquet":
            pq.write_table(table, path, compression="zstd")
        else:
            with path.open("w", encoding="utf-8") as handle:
                for row in table.to_pylist():
                    handle.write(json.dumps(row, ensure_ascii=False) + "\n")
        grouped = table.group_by("family").aggregate([("n_tokens", "sum")])
        families = grouped.column("family").to_pylist()
        tokens = grouped.column("n_tokens_sum").to_pylist()
        files.append(
            {
                "path": path.relative_to(root).as_posix(),
                "rows": table.num_rows,
                "tokens": sum(tokens),
                "tokens_per_family": dict(sorted(zip(families, tokens, strict=True))),
            }
        )
    return files


def _mixing_summary(view: BuildView, files: list[dict[str, Any]]) -> dict[str, Any]:
    """What a user sets mixing weights from: tokens per file and per family."""
    summary = summarize(view)
    total = summary["tokens"] or 1
    return {
        "rows": summary["rows"],
        "tokens": summary["tokens"],
        "tokenizer": summary["manifest"].model.get("name") if summary["manifest"] else None,
        "per_family": {
            name: {**figures, "token_share": round(figures["tokens"] / total, 6)}
            for name, figures in summary["per_family"].items()
        },
        "files": files,
    }


def _size_category(rows: int) -> str:
    bounds = [
        (1_000, "n<1K"),
        (10_000, "1K<n<10K"),
        (100_000, "10K<n<100K"),
        (1_000_000, "100K<n<1M"),
        (10_000_000, "1M<n<10M"),
        (100_000_000, "10M<n<100M"),
        (1_000_000_000, "100M<n<1B"),
    ]
    return next((name for bound, name in bounds if rows < bound), "n>1B")


BUNDLED_MODEL_PREFIX = "SmolLM2-135M"


def dataset_card(view: BuildView, fmt: str, card: CardOptions, mixing: dict[str, Any]) -> str:
    manifest = view.manifest
    mix_name = manifest.mix.get("name") if manifest else None
    front = {
        "license": card.license,
        "language": [card.language],
        "task_categories": ["text-generation"],
        "tags": ["synthetic", "alignment", "ai-safety", "pretraining"],
        "size_categories": [_size_category(mixing["rows"])],
        "pretty_name": card.repo_id or mix_name or "synthetic data",
        "configs": [
            {
                "config_name": "default",
                "data_files": [{"split": "train", "path": f"data/train-*.{fmt}"}],
            }
        ],
    }
    lines = ["---", yaml.safe_dump(front, sort_keys=False).strip(), "---", ""]
    title = card.repo_id or mix_name or "Synthetic alignment data"
    lines += [
        f"# {title}",
        "",
        "Synthetic documents for alignment pretraining: long-horizon deployment stories, "
        "technical reports and high-stakes choices in which AI systems stay honest and "
        "corrigible. Generated with alignment-datagen from Jinja scenario templates, then "
        "cleaned, deduplicated and scored.",
        "",
        *_warnings(manifest),
        f"- rows: {mixing['rows']:,}",
        f"- tokens: {mixing['tokens']:,} (counted with the generating model's tokenizer)",
        "",
    ]
    if manifest is None:
        lines += [
            "No manifest accompanied these shards, so how they were made is not recorded.",
            "",
        ]
    else:
        lines += _provenance(manifest)
        lines += _filters(manifest)
    lines += [
        "## Tokens per family",
        "",
        "| family | documents | tokens | share |",
        "|---|---:|---:|---:|",
    ]
    for name, figures in mixing["per_family"].items():
        lines.append(
            f"| {_cell(name)} | {figures['documents']:,} | {figures['tokens']:,} | "
            f"{figures['token_share']:.1%} |"
        )
    lines.append("")
    if manifest is not None and manifest.diversity:
        lines += ["## Diversity", "", *_diversity(manifest.diversity)]
    row = best_row(view.table)
    if row is not None:
        sample = {
            k: (v[:600] + "..." if isinstance(v, str) and len(v) > 600 else v)
            for k, v in row.items()
        }
        lines += [
            "## A sample row",
            "",
            "The best-scored row (highest mean of its `score_*` columns):",
            "",
            "```json",
            json.dumps(sample, indent=2, ensure_ascii=False),
            "```",
            "",
        ]
    lines += [
        "## Columns",
        "",
        "`id` (sha256 of the text), `text`, `family`, `template` (family@version), `axes` "
        "(JSON of every sampled axis), `prompt`, `model`, `engine`, `sampling` (JSON), `seed`, "
        "`n_tokens`, `finish_reason`, `doc_index`, and any `score_*` columns.",
        "",
    ]
    return "\n".join(lines)


def best_row(table: pa.Table) -> dict[str, Any] | None:
    """The row a card shows: highest mean of its non-null `score_*` values, ties (and
    tables without scores) broken by the smallest id; rows with no scores come last."""
    if table.num_rows == 0:
        return None
    scores = [c for c in table.column_names if c.startswith("score_")]
    if scores:
        values = np.column_stack(
            [table.column(c).to_numpy(zero_copy_only=False).astype(float) for c in scores]
        )
        with np.errstate(all="ignore"):
            counts = np.sum(~np.isnan(values), axis=1)
            means = np.where(counts > 0, np.nansum(values, axis=1) / np.maximum(counts, 1), -np.inf)
    else:
        means = np.zeros(table.num_rows)
    ids = np.array(table.column("id").to_pylist(), dtype=object)
    best = min(range(table.num_rows), key=lambda i: (-means[i], ids[i]))
    return table.slice(best, 1).to_pylist()[0]


def _warnings(manifest: Manifest | None) -> list[str]:
    if manifest is None:
        return []
    lines = []
    model = str(manifest.model.get("name", ""))
    if model.startswith(BUNDLED_MODEL_PREFIX):
        lines += [
            f"> **Warning: test-quality data.** These documents were written by `{model}`, the "
            "135M-parameter model bundled to exercise the pipeline on a CPU. Expect incoherent "
            "stories, chatter and contradictions; do not train on them. Generate with a capable "
            "model (for example `--engine vllm --model Qwen/Qwen2.5-7B-Instruct`) for real use.",
            "",
        ]
    for name, judge in _judges(manifest):
        if not judge.get("drops_rows", False) and judge.get("reliable") is False:
            lines += [
                f"> **Note:** the `{name}` judge was unreliable on the labelled validation set "
                f"(accuracy {_figure(judge.get('accuracy'))}) and dropped nothing; its scores "
                f"are kept in `score_{name}`, but no row was removed for scoring low.",
                "",
            ]
    return lines


def _judges(manifest: Manifest) -> list[tuple[str, dict[str, Any]]]:
    return [(str(k), v) for k, v in sorted(manifest.judges.items()) if isinstance(v, dict)]


def _provenance(manifest: Manifest) -> list[str]:
    config = manifest.config
    counts = manifest.counts
    mix = manifest.mix.get("name")
    templates = ", ".join(f"`{t}`" for t in manifest.templates.values())
    model = manifest.model
    digest = f" (sha256 `{str(model['sha256'])[:16]}`)" if model.get("sha256") else ""
    return [
        "## How it was made",
        "",
        f"- mix: `{mix}` (config hash `{manifest.config_hash[:16]}`)",
        f"- templates: {templates}",
        f"- engine: `{manifest.engine}`, model: `{model.get('name')}`{digest}",
        f"- seed: {manifest.seed}",
        f"- sampling: `{json.dumps(config.get('sampling', {}))}`",
        f"- documents generated: {_figure(counts.get('generated', 0))}; "
        f"kept: {_figure(counts.get('kept', 0))}",
        f"- generator version: {manifest.package_version}",
        "",
    ]


def _filters(manifest: Manifest) -> list[str]:
    """Every setting that decided which rows were kept, and what each one dropped."""
    config = manifest.config
    dropped = manifest.counts.get("dropped")
    dropped = dropped if isinstance(dropped, dict) else {}
    lines = ["## Filters and thresholds", ""]
    filters = config.get("filters")
    if isinstance(filters, dict):
        lines += [f"- clean: `{k}` = {_value(v)}" for k, v in filters.items()]
    stages = [s.get("stage") for s in manifest.stages if isinstance(s, dict)]
    if "exact-dedup" in stages:
        lines.append("- exact duplicates (same text after cleaning): removed")
    dedup = config.get("dedup")
    if isinstance(dedup, dict):
        if dedup.get("enabled", True):
            lines.append(
                f"- near-duplicates: MinHash over word {dedup.get('ngram')}-grams, "
                f"{dedup.get('num_perm')} permutations, removed at Jaccard similarity "
                f">= {dedup.get('threshold')} (the first of each cluster is kept)"
            )
        else:
            lines.append("- near-duplicates: not removed (dedup disabled)")
    scores = config.get("scores")
    if isinstance(scores, dict) and scores:
        lines += ["", "| score | minimum |", "|---|---|"]
        for name, minimum in scores.items():
            rule = "scored only, nothing dropped" if minimum is None else f">= {_value(minimum)}"
            lines.append(f"| `score_{_cell(name)}` | {rule} |")
        lines.append("")
    judge_minimums = config.get("judges")
    judge_minimums = judge_minimums if isinstance(judge_minimums, dict) else {}
    for name, judge in _judges(manifest):
        minimum = judge.get("minimum", judge_minimums.get(name))
        if judge.get("drops_rows"):
            verdict = "reliable; rows below the minimum were dropped"
        else:
            verdict = "unreliable; dropped nothing (scores kept)"
        lines.append(
            f"- judge `{name}`: minimum {_value(minimum)}; validation accuracy "
            f"{_figure(judge.get('accuracy'))}: {verdict}"
        )
    decontaminate = config.get("decontaminate")
    if isinstance(decontaminate, dict):
        digest = str(decontaminate.get("sha256", ""))[:16]
        lines.append(
            f"- decontamination: rows sharing a word {decontaminate.get('ngram')}-gram with any "
            f"item of `{decontaminate.get('file')}` (sha256 `{digest}`) dropped: "
            f"{_figure(dropped.get('contaminated', 0))}"
        )
    if manifest.leakage:
        lines.append("- leakage gate (overlap with held-out eval items):")
        lines += [f"  - {k}: {_value(v)}" for k, v in manifest.leakage.items()]
    lines += ["", "Dropped, per reason:", ""]
    if dropped:
        lines += ["| reason | rows |", "|---|---:|"]
        lines += [f"| {_cell(reason)} | {_figure(n)} |" for reason, n in dropped.items()]
    else:
        lines.append("none")
    lines.append("")
    return lines


def _diversity(diversity: dict[str, Any]) -> list[str]:
    """Scalars as a list, top-N lists as tables: a card is read, not parsed."""
    lines: list[str] = []
    tables: list[str] = []
    for key, value in diversity.items():
        if isinstance(value, list) and all(isinstance(v, dict) for v in value):
            tables += [f"**{key.replace('_', ' ')}**", "", "| text | documents | share |"]
            tables.append("|---|---:|---:|")
            for item in value:
                tables.append(
                    f"| {_cell(item.get('text', ''))} | {_figure(item.get('count'))} | "
                    f"{_share(item.get('share'))} |"
                )
            tables.append("")
        elif isinstance(value, dict) and all(isinstance(v, dict) for v in value.values()):
            columns = list(dict.fromkeys(k for inner in value.values() for k in inner))
            tables += [
                f"**{key.replace('_', ' ')}**",
                "",
                "| | " + " | ".join(_cell(str(c).replace("_", " ")) for c in columns) + " |",
                "|---|" + "---|" * len(columns),
            ]
            for name, inner in value.items():
                cells = " | ".join(_cell(_labelled(c, inner.get(c))) for c in columns)
                tables.append(f"| {_cell(name)} | {cells} |")
            tables.append("")
        elif isinstance(value, dict):
            lines.append(
                f"- {key.replace('_', ' ')}: "
                + ", ".join(f"{k} {_labelled(k, v)}" for k, v in value.items())
            )
        else:
            lines.append(f"- {key.replace('_', ' ')}: {_labelled(key, value)}")
    return [*lines, "", *tables]


def _labelled(key: Any, value: Any) -> str:
    """Shares as percentages; other figures as they are."""
    if str(key).endswith("share") and isinstance(value, (int, float)):
        return _share(value)
    return "missing" if value is None else _value(value)


def _cell(value: Any) -> str:
    """Text safe inside a Markdown table cell: one line, no pipes, bounded."""
    text = " ".join(str(value).split()).replace("|", "\\|")
    return text if len(text) <= 120 else text[:117].rsplit(" ", 1)[0] + " ..."


def _share(value: Any) -> str:
    return f"{value:.1%}" if isinstance(value, (int, float)) else _value(value)


def _figure(value: Any) -> str:
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        return f"{value:.3g}"
    return "missing" if value is None else _cell(value)


def _value(value: Any) -> str:
    if value is None:
        return "none"
    if isinstance(value, (dict, list)):
        return f"`{json.dumps(value)}`"
    return _figure(value)


# -- upload ---------------------------------------------------------------------------------


def resolve_token() -> str:
    from huggingface_hub import get_token

    token = get_token()
    if not token:
        raise ExportError(
            "no Hugging Face token: set HF_TOKEN or run `hf auth login` (or use --local-dir)"
        )
    return token


def upload_repository(folder: Path, repo_id: str, private: bool, api: Any) -> list[str]:
    """Create the dataset repo if missing and upload `folder`; returns the paths sent.

    Data files go in batches, one commit each, so a large export that is
    interrupted resumes at the first batch the repository does not yet hold.
    A network or Hub failure is one line saying so, never a traceback.
    """
    from huggingface_hub.errors import HTTPError  # the HTTP client's base error

    try:
        return _upload(folder, repo_id, private, api)
    except (OSError, HTTPError) as exc:
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ExportError(
            f"upload to {repo_id} failed ({reason[:200]}); run the same command again to "
            "resume: files already uploaded are skipped"
        ) from None


def _upload(folder: Path, repo_id: str, private: bool, api: Any) -> list[str]:
    api.create_repo(repo_id, repo_type="dataset", private=private, exist_ok=True)
    data = sorted(p.relative_to(folder).as_posix() for p in (folder / "data").iterdir())
    present = _already_uploaded(api, repo_id, folder, data)
    pending = [path for path in data if path not in present]
    for start in range(0, len(pending), UPLOAD_BATCH_FILES):
        batch = pending[start : start + UPLOAD_BATCH_FILES]
        api.upload_folder(
            repo_id=repo_id,
            repo_type="dataset",
            folder_path=str(folder),
            allow_patterns=batch,
            commit_message=f"Add {len(batch)} data files",
        )
    api.upload_folder(
        repo_id=repo_id,
        repo_type="dataset",
        folder_path=str(folder),
        allow_patterns=["README.md", "mixing.json"],
        commit_message="Update dataset card and mixing summary",
    )
    return [*pending, "README.md", "mixing.json"]


def _already_uploaded(api: Any, repo_id: str, folder: Path, paths: list[str]) -> set[str]:
    present = set()
    for entry in api.get_paths_info(repo_id, paths, repo_type="dataset"):
        lfs = getattr(entry, "lfs", None)
        remote = getattr(lfs, "sha256", None) if lfs is not None else None
        if remote is None:
            continue
        if remote == file_sha256(folder / entry.path):
            present.add(entry.path)
    return present
