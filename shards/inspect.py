"""Reading a build back: locate its shards, check them, summarise them, pick and filter rows.

Everything here reads; nothing writes into a build folder. `open_build` is the
one way inspect, the HTML report and export read a build: it checks every
shard against the manifest (size and rows always, sha256 when asked), so a
shard cut short, replaced or edited is refused with one line naming it rather
than reported, published or carded with the wrong figures.
"""

from __future__ import annotations

import ast
import io
import random
import tokenize
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from generator.errors import ShardError
from generator.records import file_sha256
from shards.format import SCHEMA, json_object, read_batches, schema_for
from shards.manifest import MANIFEST, Manifest, ShardEntry, manifest_exists, read_manifest

DROPPED_FOLDER = "dropped"
FIRST_VERSION_WITH_DROPPED = 2  # manifest@2 lists dropped_shards


@dataclass
class BuildView:
    """The shards of one build (or a loose set of shard files) and its manifest, if any.

    `parts` holds one table per shard, in order, so a writer can emit one file
    per shard without reading it again; `table` is all of them together.
    """

    table: pa.Table
    manifest: Manifest | None
    shard_paths: list[Path]
    parts: list[pa.Table] = field(default_factory=list)
    dropped: bool = False
    source: str = ""  # the paths it was opened from, for messages

    @property
    def columns(self) -> list[str]:
        return self.table.column_names

    @property
    def score_columns(self) -> list[str]:
        return [c for c in self.columns if c.startswith("score_")]

    def shard_holding(self, row_id: str) -> Path | None:
        for path, part in zip(self.shard_paths, self.parts, strict=True):
            if pc.index(part.column("id"), row_id).as_py() >= 0:
                return path
        return None


def open_build(paths: list[Path], *, dropped: bool = False, checksums: bool = False) -> BuildView:
    """Accept a build folder, a manifest.json or shard files; check each shard against the
    manifest that lists it; fail with one line naming the path.

    `dropped` reads the rows the build dropped (`OUT/dropped/`, each with its
    `drop_reason`) instead of the kept ones. `checksums` also compares each
    shard's sha256 with the manifest's (export does; it reads every byte anyway).
    """
    if not paths:
        raise ShardError("no build folder, manifest or shard files given")
    manifest: Manifest | None = None
    listed: list[tuple[Path, ShardEntry | None, Path | None]] = []
    for path in paths:
        if path.is_dir() or (path.name == MANIFEST and path.is_file()):
            folder = path if path.is_dir() else path.parent
            found, manifest = _from_folder(folder, dropped)
            listed.extend(found)
        elif path.is_file():
            listed.append((path, *_entry_for_file(path, dropped)))
        else:
            raise ShardError(f"{path}: no such file or folder")
    shard_paths, parts = [], []
    for path, entry, manifest_path in listed:
        if entry is not None and manifest_path is not None:
            _check_file(path, entry, manifest_path, checksums)
        batches = list(read_batches(path, dropped=dropped))
        part = pa.Table.from_batches(batches) if batches else _empty(dropped)
        if entry is not None and part.num_rows != entry.rows:
            raise ShardError(
                f"{path}: {part.num_rows:,} rows but {manifest_path} lists {entry.rows:,} "
                "(truncated or replaced; restore it or rebuild)"
            )
        shard_paths.append(path)
        parts.append(part)
    table = _concat(parts, dropped)
    source = ", ".join(str(p) for p in paths)
    return BuildView(table, manifest, shard_paths, parts, dropped, source)


def _empty(dropped: bool) -> pa.Table:
    return schema_for([], dropped=dropped).empty_table() if dropped else SCHEMA.empty_table()


def _concat(parts: list[pa.Table], dropped: bool) -> pa.Table:
    if not parts:
        return _empty(dropped)
    try:
        return pa.concat_tables(parts, promote_options="default")
    except (pa.ArrowInvalid, pa.ArrowTypeError) as exc:
        raise ShardError(f"these shards have different columns ({exc})") from None


def _from_folder(
    folder: Path, dropped: bool
) -> tuple[list[tuple[Path, ShardEntry | None, Path | None]], Manifest | None]:
    where = folder / DROPPED_FOLDER if dropped else folder
    if not manifest_exists(folder):
        shards = sorted(where.glob("shard-*.arrow"))
        if not shards:
            raise ShardError(f"{where}: no manifest.json and no shard-*.arrow files")
        return [(p, None, None) for p in shards], None
    manifest_path = folder / MANIFEST
    manifest = read_manifest(manifest_path)
    if dropped and _format_version(manifest) < FIRST_VERSION_WITH_DROPPED:
        raise ShardError(
            f"{manifest_path}: this build kept no dropped rows (made by an older version; "
            "rebuild to keep them)"
        )
    entries = manifest.dropped_shards if dropped else manifest.shards
    kept = manifest.counts.get("kept")
    if not dropped and isinstance(kept, int) and kept != manifest.rows:
        raise ShardError(
            f"{manifest_path}: counts.kept is {kept:,} but its shards list {manifest.rows:,} rows"
        )
    found = []
    for entry in entries:
        path = _inside(folder, entry.path, manifest_path)
        if not path.is_file():
            raise ShardError(f"{path}: listed in {manifest_path} but missing")
        found.append((path, entry, manifest_path))
    return found, manifest


def _format_version(manifest: Manifest) -> int:
    version = manifest.format.rpartition("@")[2]
    return int(version) if version.isdigit() else 0


def _inside(folder: Path, relative: str, manifest_path: Path) -> Path:
    """A manifest names files inside its own build folder, never anywhere else."""
    path = folder / relative
    if Path(relative).is_absolute() or not path.resolve().is_relative_to(folder.resolve()):
        raise ShardError(f"{manifest_path}: shard path {relative!r} is outside the build folder")
    return path


def _entry_for_file(path: Path, dropped: bool) -> tuple[ShardEntry | None, Path | None]:
    """A shard named directly is still checked when its build's manifest lists it."""
    folder = path.parent.parent if path.parent.name == DROPPED_FOLDER else path.parent
    if not manifest_exists(folder):
        return None, None
    manifest = read_manifest(folder)
    relative = path.resolve().relative_to(folder.resolve()).as_posix()
    for entry in [*manifest.shards, *manifest.dropped_shards]:
        if entry.path == relative:
            return entry, folder / MANIFEST
    return None, None


def _check_file(path: Path, entry: ShardEntry, manifest_path: Path, checksums: bool) -> None:
    size = path.stat().st_size
    if size != entry.bytes:
        raise ShardError(
            f"{path}: {size:,} bytes but {manifest_path} lists {entry.bytes:,} "
            "(truncated or replaced; restore it or rebuild)"
        )
    if checksums and file_sha256(path) != entry.sha256:
        raise ShardError(
            f"{path}: sha256 differs from the one {manifest_path} lists "
            "(modified since the build; restore it or rebuild)"
        )


def row_axes(view: BuildView, row: dict[str, Any]) -> dict[str, Any]:
    """A row's `axes` as an object; damage is one line naming the shard and the row."""
    try:
        return json_object(row["axes"])
    except (ValueError, RecursionError) as exc:
        shard = view.shard_holding(row["id"])
        where = f"{shard}: " if shard else ""
        raise ShardError(f"{where}row {row['id']}: axes is not a JSON object ({exc})") from None


# -- summary ------------------------------------------------------------------------


@dataclass(frozen=True)
class Histogram:
    edges: list[float]
    counts: list[int]
    minimum: float
    mean: float
    maximum: float


def histogram(values: np.ndarray, bins: int = 20) -> Histogram | None:
    values = values[np.isfinite(values)] if values.dtype.kind == "f" else values
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
    manifest = view.manifest
    if view.dropped:
        reasons = pc.value_counts(pc.fill_null(table.column("drop_reason"), "(no reason)"))
        dropped: dict[str, int] | None = dict(
            sorted((r["values"], r["counts"]) for r in reasons.to_pylist())
        )
    else:
        recorded = manifest.counts.get("dropped") if manifest else None
        dropped = recorded if isinstance(recorded, dict) else None
    return {
        "rows": table.num_rows,
        "tokens": int(pc.sum(table.column("n_tokens")).as_py() or 0),
        "per_family": per_family,
        "dropped": dropped,
        "distributions": {k: v for k, v in distributions.items() if v is not None},
        "null_scores": {
            c: table.column(c).null_count for c in view.score_columns if table.column(c).null_count
        },
        "diversity": (manifest.diversity or None) if manifest and not view.dropped else None,
        "manifest": manifest,
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
        known = known_families(view)
        if family not in known:
            raise ShardError(f"--family: unknown family '{family}' (known: {', '.join(known)})")
        table = table.filter(pc.field("family") == family)
    if row_id is not None:
        table = table.filter(pc.field("id") == row_id)
    if where is not None:
        expression = parse_where(where, table.schema)
        try:
            table = table.filter(expression)
        except (pa.ArrowException, TypeError, ValueError) as exc:
            detail = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            raise WhereError(f"--where: cannot compare in {where!r}: {detail}") from None
    return table


def known_families(view: BuildView) -> list[str]:
    """Families with rows, plus those the manifest's mix names (which may have none)."""
    present = set(pc.unique(view.table.column("family")).to_pylist())
    return sorted(present | set(view.manifest.templates if view.manifest else ()))


def sample_rows(table: pa.Table, n: int, seed: int) -> list[dict[str, Any]]:
    """The same (table, n, seed) always shows the same rows, in their build order."""
    picked = sorted(random.Random(seed).sample(range(table.num_rows), min(n, table.num_rows)))
    return table.take(picked).to_pylist() if picked else []


# -- the --where language -------------------------------------------------------------

# Bounds that keep parsing and Arrow's own recursion far from any stack limit: real
# filters are a few terms long, and thousands of nested `not`s or `or`s are an attack.
MAX_WHERE_CHARS = 2_000
MAX_WHERE_NODES = 500
MAX_WHERE_DEPTH = 40
INT64 = (-(2**63), 2**63 - 1)

_COMPARE = {
    ast.Eq: "__eq__",
    ast.NotEq: "__ne__",
    ast.Lt: "__lt__",
    ast.LtE: "__le__",
    ast.Gt: "__gt__",
    ast.GtE: "__ge__",
}
_NULL_NAMES = {"null", "None"}


class WhereError(ShardError):
    pass


def parse_where(expression: str, schema: pa.Schema) -> pc.Expression:
    """Turn `score_quality >= 0.7 and family == 'technical-report'` into an Arrow filter.

    The text is parsed with Python's grammar and then only column names,
    literals, comparisons, `is null`, `is not null`, `and`, `or`, `not` and
    parentheses are accepted; nothing is ever evaluated as code. The
    expression's length, node count and depth are bounded before anything
    recursive looks at it.
    """
    if len(expression) > MAX_WHERE_CHARS:
        raise WhereError(
            f"--where: expression too long ({len(expression):,} characters; "
            f"at most {MAX_WHERE_CHARS:,})"
        )
    try:
        tree = ast.parse(expression, mode="eval")
    except SyntaxError as exc:
        hint = _syntax_hint(expression, exc)
        raise WhereError(f"--where: cannot parse {expression!r}: {hint}") from None
    except (ValueError, RecursionError, MemoryError, OverflowError) as exc:
        raise WhereError(f"--where: cannot parse {expression!r}: {type(exc).__name__}") from None
    _check_size(tree, expression)
    return _to_arrow(tree.body, expression, schema)


def _syntax_hint(expression: str, exc: SyntaxError) -> str:
    if _has_single_equals(expression):
        return "use == to compare (a single = assigns)"
    if "&&" in expression or "||" in expression:
        return "use and / or to join comparisons"
    return exc.msg


def _has_single_equals(expression: str) -> bool:
    try:
        tokens = list(tokenize.generate_tokens(io.StringIO(expression).readline))
    except (tokenize.TokenError, SyntaxError, ValueError):
        return False
    return any(t.type == tokenize.OP and t.string == "=" for t in tokens)


def _check_size(tree: ast.AST, expression: str) -> None:
    """Count nodes and depth without recursion, stopping at the first bound crossed."""
    stack = [(tree, 1)]
    nodes = 0
    while stack:
        node, depth = stack.pop()
        nodes += 1
        if nodes > MAX_WHERE_NODES:
            raise WhereError(f"--where: expression too large (more than {MAX_WHERE_NODES} parts)")
        if depth > MAX_WHERE_DEPTH:
            raise WhereError(
                f"--where: expression nested too deeply (more than {MAX_WHERE_DEPTH} levels)"
            )
        stack.extend((child, depth + 1) for child in ast.iter_child_nodes(node))


def _to_arrow(node: ast.AST, expression: str, schema: pa.Schema) -> pc.Expression:
    if isinstance(node, ast.BoolOp):
        parts = [_to_arrow(v, expression, schema) for v in node.values]
        return _balanced(parts, isinstance(node.op, ast.And))
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.Not):
        return ~_to_arrow(node.operand, expression, schema)
    if isinstance(node, ast.Compare):
        return _compare(node, expression, schema)
    if isinstance(node, ast.Name):  # a bare boolean column
        operand = _operand(node, expression, schema)
        if not pa.types.is_boolean(schema.field(node.id).type):
            raise WhereError(
                f"--where: column '{node.id}' is not true/false; compare it, e.g. {node.id} == ..."
            )
        return operand
    if isinstance(node, ast.BinOp) and isinstance(node.op, (ast.BitAnd, ast.BitOr)):
        raise WhereError(f"--where: use and / or instead of & / | in {expression!r}")
    raise WhereError(
        f"--where: only comparisons joined by and/or/not are allowed, got {expression!r}"
    )


def _balanced(parts: list[pc.Expression], conjunction: bool) -> pc.Expression:
    """Join terms as a balanced tree, so Arrow's depth grows with log(terms)."""
    while len(parts) > 1:
        paired = [
            (a & b if conjunction else a | b) for a, b in zip(parts[::2], parts[1::2], strict=False)
        ]
        parts = paired + ([parts[-1]] if len(parts) % 2 else [])
    return parts[0]


def _compare(node: ast.Compare, expression: str, schema: pa.Schema) -> pc.Expression:
    if any(isinstance(op, (ast.Is, ast.IsNot)) for op in node.ops):
        right = node.comparators[0]
        if len(node.ops) != 1 or not isinstance(node.left, ast.Name) or not _is_null(right):
            raise WhereError(
                f"--where: 'is' only tests a column for null: "
                f"COLUMN is null, COLUMN is not null (in {expression!r})"
            )
        column = _operand(node.left, expression, schema)
        return column.is_null() if isinstance(node.ops[0], ast.Is) else column.is_valid()
    left = _operand(node.left, expression, schema)
    result = None
    for op, right_node in zip(node.ops, node.comparators, strict=True):
        if type(op) not in _COMPARE:
            raise WhereError(f"--where: unsupported operator in {expression!r}")
        right = _operand(right_node, expression, schema)
        term = getattr(left, _COMPARE[type(op)])(right)
        result = term if result is None else result & term
        left = right
    assert result is not None
    return result


def _is_null(node: ast.AST) -> bool:
    return (isinstance(node, ast.Name) and node.id in _NULL_NAMES) or (
        isinstance(node, ast.Constant) and node.value is None
    )


def _operand(node: ast.AST, expression: str, schema: pa.Schema) -> Any:
    if isinstance(node, ast.BinOp) and isinstance(node.op, (ast.BitAnd, ast.BitOr)):
        raise WhereError(f"--where: use and / or instead of & / | in {expression!r}")
    if _is_null(node):
        raise WhereError(
            f"--where: test for null with 'is null' or 'is not null' in {expression!r}"
        )
    if isinstance(node, ast.Name):
        if node.id not in schema.names:
            raise WhereError(
                f"--where: unknown column '{node.id}' (columns: {', '.join(schema.names)})"
            )
        return pc.field(node.id)
    negative = (
        isinstance(node, ast.UnaryOp)
        and isinstance(node.op, ast.USub)
        and isinstance(node.operand, ast.Constant)
    )
    value = node.operand.value if negative else getattr(node, "value", None)  # type: ignore[attr-defined]
    if isinstance(node, ast.Constant) or negative:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            value = -value if negative else value
            if isinstance(value, int) and not INT64[0] <= value <= INT64[1]:
                raise WhereError(f"--where: the number {value} is out of range in {expression!r}")
            return pc.scalar(value)
        if isinstance(value, (str, bool)) and not negative:
            return pc.scalar(value)
    raise WhereError(f"--where: only column names and literals may be compared in {expression!r}")
