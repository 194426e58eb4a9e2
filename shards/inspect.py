"""Reading a build back: locate its shards, summarise them, pick samples, filter rows.

Everything here reads; nothing writes into a build folder. Shards are
memory-mapped, so summarising millions of rows costs little more than the
columns it touches.
"""

from __future__ import annotations

import ast
import json
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from generator.errors import ShardError
from shards.format import read_batches

MANIFEST = "manifest.json"


@dataclass
class BuildView:
    """The shards of one build (or a loose set of shard files) and its manifest, if any."""

    table: pa.Table
    manifest: dict[str, Any] | None
    shard_paths: list[Path]

    @property
    def columns(self) -> list[str]:
        return self.table.column_names

    @property
    def score_columns(self) -> list[str]:
        return [c for c in self.columns if c.startswith("score_")]


def open_build(paths: list[Path]) -> BuildView:
    """Accept a build folder, a manifest.json or shard files; fail with one line naming the path."""
    if not paths:
        raise ShardError("no build folder, manifest or shard files given")
    manifest: dict[str, Any] | None = None
    shard_paths: list[Path] = []
    for path in paths:
        if path.is_dir():
            found, manifest = _from_folder(path)
            shard_paths.extend(found)
        elif path.name == MANIFEST and path.is_file():
            found, manifest = _from_folder(path.parent)
            shard_paths.extend(found)
        elif path.is_file():
            shard_paths.append(path)
        else:
            raise ShardError(f"{path}: no such file or folder")
    batches = [batch for path in shard_paths for batch in read_batches(path)]
    if batches:
        table = pa.Table.from_batches(batches)
    else:
        from shards.format import SCHEMA

        table = SCHEMA.empty_table()
    return BuildView(table=table, manifest=manifest, shard_paths=shard_paths)


def _from_folder(folder: Path) -> tuple[list[Path], dict[str, Any] | None]:
    manifest_path = folder / MANIFEST
    if not manifest_path.is_file():
        shards = sorted(folder.glob("shard-*.arrow"))
        if not shards:
            raise ShardError(f"{folder}: no manifest.json and no shard-*.arrow files")
        return shards, None
    try:
        manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
        listed = [folder / shard["path"] for shard in manifest["shards"]]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ShardError(f"{manifest_path}: unreadable manifest ({exc})") from None
    for path in listed:
        if not path.is_file():
            raise ShardError(f"{path}: listed in {manifest_path} but missing")
    return listed, manifest


# -- summary ------------------------------------------------------------------------


@dataclass(frozen=True)
class Histogram:
    edges: list[float]
    counts: list[int]
    minimum: float
    mean: float
    maximum: float


def histogram(values: np.ndarray, bins: int = 20) -> Histogram | None:
    values = values[~np.isnan(values)] if values.dtype.kind == "f" else values
    if values.size == 0:
        return None
    counts, edges = np.histogram(values, bins=bins)
    return Histogram(
        edges=[float(e) for e in edges],
        counts=[int(c) for c in counts],
        minimum=float(values.min()),
        mean=float(values.mean()),
        maximum=float(values.max()),
    )


def summarize(view: BuildView) -> dict[str, Any]:
    """The figures `gen inspect` prints and the HTML report plots."""
    table = view.table
    families = table.group_by("family").aggregate([("n_tokens", "sum"), ("n_tokens", "count")])
    per_family = {
        row["family"]: {"documents": row["n_tokens_count"], "tokens": row["n_tokens_sum"]}
        for row in families.sort_by("family").to_pylist()
    }
    distributions = {"n_tokens": histogram(table.column("n_tokens").to_numpy())}
    for column in view.score_columns:
        distributions[column] = histogram(
            table.column(column).to_numpy(zero_copy_only=False).astype(float)
        )
    manifest = view.manifest or {}
    return {
        "rows": table.num_rows,
        "tokens": int(pc.sum(table.column("n_tokens")).as_py() or 0),
        "per_family": per_family,
        "dropped": manifest.get("counts", {}).get("dropped"),
        "distributions": {k: v for k, v in distributions.items() if v is not None},
        "null_scores": {
            c: table.column(c).null_count for c in view.score_columns if table.column(c).null_count
        },
        "diversity": manifest.get("diversity"),
        "manifest": manifest or None,
    }


# -- selecting rows -------------------------------------------------------------------


def select(
    view: BuildView,
    where: str | None = None,
    family: str | None = None,
    row_id: str | None = None,
) -> pa.Table:
    table = view.table
    if family is not None:
        table = table.filter(pc.field("family") == family)
    if row_id is not None:
        table = table.filter(pc.field("id") == row_id)
    if where:
        try:
            table = table.filter(parse_where(where, view.columns))
        except (pa.ArrowNotImplementedError, pa.ArrowInvalid, pa.ArrowTypeError) as exc:
            detail = str(exc).splitlines()[0]
            raise WhereError(f"--where: cannot compare in {where!r}: {detail}") from None
    return table


def sample_rows(table: pa.Table, n: int, seed: int) -> list[dict[str, Any]]:
    """The same (table, n, seed) always shows the same rows, in their build order."""
    picked = sorted(random.Random(seed).sample(range(table.num_rows), min(n, table.num_rows)))
    return table.take(picked).to_pylist() if picked else []


_COMPARE = {
    ast.Eq: "__eq__",
    ast.NotEq: "__ne__",
    ast.Lt: "__lt__",
    ast.LtE: "__le__",
    ast.Gt: "__gt__",
    ast.GtE: "__ge__",
}


class WhereError(ShardError):
    pass


def parse_where(expression: str, columns: list[str]) -> pc.Expression:
    """Turn `score_aesthetic >= 7 and family == 'technical-report'` into an Arrow filter.

    The text is parsed with Python's grammar and then only column names,
    literals, comparisons, `and`, `or`, `not` and parentheses are accepted;
    nothing is ever evaluated as code.
    """
    try:
        tree = ast.parse(expression, mode="eval")
    except SyntaxError as exc:
        raise WhereError(f"--where: cannot parse {expression!r}: {exc.msg}") from None
    return _to_arrow(tree.body, expression, columns)


def _to_arrow(node: ast.AST, expression: str, columns: list[str]) -> pc.Expression:
    if isinstance(node, ast.BoolOp):
        parts = [_to_arrow(v, expression, columns) for v in node.values]
        combined = parts[0]
        for part in parts[1:]:
            combined = combined & part if isinstance(node.op, ast.And) else combined | part
        return combined
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.Not):
        return ~_to_arrow(node.operand, expression, columns)
    if isinstance(node, ast.Compare):
        left = _operand(node.left, expression, columns)
        result = None
        for op, right_node in zip(node.ops, node.comparators, strict=True):
            if type(op) not in _COMPARE:
                raise WhereError(f"--where: unsupported operator in {expression!r}")
            right = _operand(right_node, expression, columns)
            term = getattr(left, _COMPARE[type(op)])(right)
            result = term if result is None else result & term
            left = right
        assert result is not None
        return result
    if isinstance(node, ast.Name):  # a bare boolean column
        return _operand(node, expression, columns)
    raise WhereError(
        f"--where: only comparisons joined by and/or/not are allowed, got {expression!r}"
    )


def _operand(node: ast.AST, expression: str, columns: list[str]) -> Any:
    if isinstance(node, ast.Name):
        if node.id not in columns:
            raise WhereError(f"--where: unknown column '{node.id}' (columns: {', '.join(columns)})")
        return pc.field(node.id)
    if isinstance(node, ast.Constant) and isinstance(node.value, (int, float, str, bool)):
        return pc.scalar(node.value)
    if (
        isinstance(node, ast.UnaryOp)
        and isinstance(node.op, ast.USub)
        and isinstance(node.operand, ast.Constant)
        and isinstance(node.operand.value, (int, float))
    ):
        return pc.scalar(-node.operand.value)
    raise WhereError(f"--where: only column names and literals may be compared in {expression!r}")
