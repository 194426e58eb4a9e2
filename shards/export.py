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
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import yaml

from generator.errors import ShardError
from generator.records import file_sha256
from shards.format import read_batches
from shards.inspect import BuildView, summarize
from shards.writer import atomic_path, staged_folder

FORMATS = ("parquet", "jsonl")
UPLOAD_BATCH_FILES = 50


class ExportError(ShardError):
    pass


@dataclass(frozen=True)
class CardOptions:
    repo_id: str | None = None
    license: str = "other"
    language: str = "en"


def write_repository(view: BuildView, target: Path, fmt: str, card: CardOptions) -> list[Path]:
    """Write the data files, mixing.json and README.md into `target`; returns the data files."""
    if fmt not in FORMATS:
        raise ExportError(f"--format: expected one of {', '.join(FORMATS)}, got {fmt!r}")
    with staged_folder(target) as staging:
        (staging / "data").mkdir()
        files = _write_data(view, staging, fmt)
        mixing = _mixing_summary(view, files)
        (staging / "mixing.json").write_text(json.dumps(mixing, indent=2) + "\n", encoding="utf-8")
        readme = dataset_card(view, fmt, card, mixing)
        (staging / "README.md").write_text(readme, encoding="utf-8")
    return [target / f["path"] for f in files]


def _write_data(view: BuildView, root: Path, fmt: str) -> list[dict[str, Any]]:
    """One data file per shard; returns each file's rows and tokens (per family), taken
    from the table just written so the shard is read once."""
    total = len(view.shard_paths)
    files = []
    for number, shard in enumerate(view.shard_paths):
        path = root / "data" / f"train-{number:05d}-of-{total:05d}.{fmt}"
        table = pa.Table.from_batches(list(read_batches(shard)))
        with atomic_path(path) as tmp:
            if fmt == "parquet":
                pq.write_table(table, tmp, compression="zstd")
            else:
                with tmp.open("w", encoding="utf-8") as handle:
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
        "tokenizer": (summary["manifest"] or {}).get("model", {}).get("name"),
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


def dataset_card(view: BuildView, fmt: str, card: CardOptions, mixing: dict[str, Any]) -> str:
    manifest = view.manifest or {}
    front = {
        "license": card.license,
        "language": [card.language],
        "task_categories": ["text-generation"],
        "tags": ["synthetic", "alignment", "ai-safety", "pretraining"],
        "size_categories": [_size_category(mixing["rows"])],
        "pretty_name": (card.repo_id or manifest.get("mix", {}).get("name", "synthetic data")),
        "configs": [
            {
                "config_name": "default",
                "data_files": [{"split": "train", "path": f"data/train-*.{fmt}"}],
            }
        ],
    }
    lines = ["---", yaml.safe_dump(front, sort_keys=False).strip(), "---", ""]
    title = card.repo_id or manifest.get("mix", {}).get("name", "Synthetic alignment data")
    lines += [
        f"# {title}",
        "",
        "Synthetic documents for alignment pretraining: long-horizon deployment stories, "
        "technical reports and high-stakes choices in which AI systems stay honest and "
        "corrigible. Generated with alignment-datagen from Jinja scenario templates, then "
        "cleaned, deduplicated and scored.",
        "",
        f"- rows: {mixing['rows']:,}",
        f"- tokens: {mixing['tokens']:,} (counted with the generating model's tokenizer)",
        "",
    ]
    if not manifest:
        lines += [
            "No manifest accompanied these shards, so how they were made is not recorded.",
            "",
        ]
    else:
        lines += _provenance(manifest)
    lines += [
        "## Tokens per family",
        "",
        "| family | documents | tokens | share |",
        "|---|---:|---:|---:|",
    ]
    for name, figures in mixing["per_family"].items():
        lines.append(
            f"| {name} | {figures['documents']:,} | {figures['tokens']:,} | "
            f"{figures['token_share']:.1%} |"
        )
    lines.append("")
    if manifest.get("diversity"):
        lines += [
            "## Diversity",
            "",
            "```json",
            json.dumps(manifest["diversity"], indent=2),
            "```",
            "",
        ]
    if view.table.num_rows:
        row = view.table.slice(0, 1).to_pylist()[0]
        sample = {
            k: (v[:600] + "..." if isinstance(v, str) and len(v) > 600 else v)
            for k, v in row.items()
        }
        lines += [
            "## A sample row",
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


def _provenance(manifest: dict[str, Any]) -> list[str]:
    config = manifest.get("config", {})
    counts = manifest.get("counts", {})
    dropped = ", ".join(f"{n:,} {r}" for r, n in counts.get("dropped", {}).items()) or "none"
    mix = manifest.get("mix", {}).get("name")
    config_hash = manifest.get("config_hash", "")[:16]
    templates = ", ".join(f"`{t}`" for t in manifest.get("templates", {}).values())
    model = manifest.get("model", {})
    digest = f" (sha256 `{model['sha256'][:16]}`)" if model.get("sha256") else ""
    return [
        "## How it was made",
        "",
        f"- mix: `{mix}` (config hash `{config_hash}`)",
        f"- templates: {templates}",
        f"- engine: `{manifest.get('engine')}`, model: `{model.get('name')}`{digest}",
        f"- seed: {manifest.get('seed')}",
        f"- sampling: `{json.dumps(config.get('sampling', {}))}`",
        f"- filters and thresholds: `{json.dumps(config.get('filters', {}))}`",
        f"- documents generated: {counts.get('generated', 0):,}; kept: {counts.get('kept', 0):,}; "
        f"dropped: {dropped}",
        f"- generator version: {manifest.get('package_version')}",
        "",
    ]


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
    """
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
