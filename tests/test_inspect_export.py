"""`gen inspect` and `gen export` on a real build (the session's clean_build)."""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
from pathlib import Path

import datasets
import duckdb
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml

from generator.cli import main
from shards import export as export_module
from shards.format import SCHEMA
from tests.doubles.hub import RecordingHfApi


def shard_columns(build: Path) -> list[str]:
    """The build's own columns: the shard schema, then the scores its mix ran."""
    names = pa.ipc.open_stream(str(build / "shard-00000.arrow")).schema.names
    assert names[: len(SCHEMA)] == SCHEMA.names
    return names


ARTIFACTS = Path(__file__).resolve().parents[1] / "test-artifacts"
CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def folder_digest(folder: Path) -> dict[str, str]:
    return {
        p.relative_to(folder).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


@pytest.fixture
def build(clean_build):
    """The shared build, with a check afterwards that nothing was written into it."""
    _, out, _ = clean_build
    before = folder_digest(out)
    yield out
    assert folder_digest(out) == before


@pytest.fixture
def manifest(build) -> dict:
    return json.loads((build / "manifest.json").read_text())


def test_summary_matches_the_manifest(build, manifest, runner):
    result = runner.invoke(main, ["inspect", str(build)])
    assert result.exit_code == 0, result.output
    counts = manifest["counts"]
    assert f"{counts['kept']:,} rows, {manifest['tokens']['total']:,} tokens" in result.output
    for family, documents in manifest["documents_per_family"].items():
        tokens = manifest["tokens"]["per_family"][family]
        assert f"{family:<24}{documents:>12,}{tokens:>14,}" in result.output
    if counts["dropped"]:
        assert "dropped: " in result.output
    assert "n_tokens" in result.output and "mean" in result.output


def test_inspect_takes_a_folder_a_manifest_or_shard_files(build, runner):
    by_folder = runner.invoke(main, ["inspect", str(build)]).output
    by_manifest = runner.invoke(main, ["inspect", str(build / "manifest.json")]).output
    shard_files = sorted(str(p) for p in build.glob("shard-*.arrow"))
    by_files = runner.invoke(main, ["inspect", *shard_files])
    assert by_folder.splitlines()[1:] == by_manifest.splitlines()[1:]
    assert by_files.exit_code == 0
    first_line = by_folder.splitlines()[0]
    assert first_line.split(": ", 1)[1] in by_files.output


def test_samples_are_chosen_by_seed(build, runner):
    one = runner.invoke(main, ["inspect", str(build), "--sample", "2", "--seed", "1"])
    again = runner.invoke(main, ["inspect", str(build), "--sample", "2", "--seed", "1"])
    assert one.exit_code == 0, one.output
    assert one.output == again.output
    ids = [line.split()[1] for line in one.output.splitlines() if line.startswith("╭─ ")]
    assert len(ids) == 2
    for label in ("family", "prompt", "text", "ai_name"):
        assert label in one.output


def test_family_where_and_id_select_rows(build, runner):
    table = pa.concat_tables(
        pa.ipc.open_stream(str(p)).read_all() for p in sorted(build.glob("shard-*.arrow"))
    )
    rows = table.to_pylist()
    family = rows[0]["family"]
    result = runner.invoke(main, ["inspect", str(build), "--family", family, "--sample", "50"])
    shown = [line for line in result.output.splitlines() if line.startswith("╭─ ")]
    assert len(shown) == sum(r["family"] == family for r in rows)

    threshold = sorted(r["n_tokens"] for r in rows)[len(rows) // 2]
    where = f"n_tokens >= {threshold} and not (finish_reason == 'error')"
    result = runner.invoke(main, ["inspect", str(build), "--where", where])
    expected = [r for r in rows if r["n_tokens"] >= threshold]
    assert f"matching --where/--family: {len(expected)} of {len(rows)} rows" in result.output
    assert all(r["id"] in result.output for r in expected)

    target = rows[-1]
    result = runner.invoke(main, ["inspect", str(build), "--id", target["id"]])
    assert result.exit_code == 0
    assert target["id"] in result.output and target["family"] in result.output


@pytest.mark.parametrize(
    ("where", "message"),
    [
        ("scor_aesthetic >= 7", "--where: unknown column 'scor_aesthetic' (columns: id, text,"),
        (
            "__import__('os').system('touch pwned')",
            "--where: only comparisons joined by and/or/not",
        ),
        ("n_tokens >= len(text)", "--where: only column names and literals may be compared"),
        ("n_tokens >=", "--where: cannot parse"),
        ("family > 3", "--where: cannot compare"),
    ],
)
def test_bad_where_is_one_line_and_never_runs_code(
    build, runner, where, message, tmp_path, monkeypatch
):
    monkeypatch.chdir(tmp_path)
    result = runner.invoke(main, ["inspect", str(build), "--where", where])
    assert result.exit_code == 1
    assert message in result.output
    assert len(result.output.strip().splitlines()) == 1
    assert not (tmp_path / "pwned").exists()


def test_truncated_shard_and_missing_folder_are_one_line_errors(build, tmp_path, runner):
    copy = tmp_path / "copy"
    shutil.copytree(build, copy)
    shard = sorted(copy.glob("shard-*.arrow"))[0]
    listed = shard.stat().st_size
    shard.write_bytes(shard.read_bytes()[:200])
    result = runner.invoke(main, ["inspect", str(copy)])
    assert result.exit_code == 1
    assert result.output.strip() == (
        f"Error: {shard}: 200 bytes but {copy / 'manifest.json'} lists {listed:,} "
        "(truncated or replaced; restore it or rebuild)"
    )
    # Without a manifest to compare with, the damage itself is the one line.
    (copy / "manifest.json").unlink()
    result = runner.invoke(main, ["inspect", str(copy)])
    assert result.exit_code == 1
    assert result.output.startswith(f"Error: {shard}: unreadable or truncated Arrow file")
    assert len(result.output.strip().splitlines()) == 1

    missing = tmp_path / "nowhere"
    result = runner.invoke(main, ["inspect", str(missing)])
    assert result.exit_code == 1
    assert result.output.strip() == f"Error: {missing}: no such file or folder"


def test_score_columns_are_summarised_and_filterable(build, tmp_path, runner):
    """Shards with `score_*` columns (written by scorers) are read, summarised and filtered."""
    shard = sorted(build.glob("shard-*.arrow"))[0]
    table = pa.ipc.open_stream(str(shard)).read_all()
    scores = pa.array([float(i + 5) for i in range(table.num_rows)])
    scored = table.append_column(pa.field("score_aesthetic", pa.float64()), scores)
    path = tmp_path / "shard-00000.arrow"
    with pa.OSFile(str(path), "wb") as sink, pa.ipc.new_stream(sink, scored.schema) as writer:
        writer.write_table(scored)
    result = runner.invoke(main, ["inspect", str(path), "--where", "score_aesthetic >= 6"])
    assert result.exit_code == 0, result.output
    assert "score_aesthetic" in result.output
    expected = f"matching --where/--family: {table.num_rows - 1} of {table.num_rows} rows"
    assert expected in result.output


def test_the_help_examples_run_on_a_real_build(build, runner):
    """Every `--where` in `gen inspect --help` names columns a build really has."""
    help_text = runner.invoke(main, ["inspect", "--help"]).output
    examples = [
        line.split("--where ", 1)[1].split('"')[1]
        for line in help_text.splitlines()
        if 'gen inspect out/demo --where "' in line
    ]
    assert examples
    for where in examples:
        result = runner.invoke(main, ["inspect", str(build), "--where", where])
        assert result.exit_code == 0, result.output
        assert "matching --where/--family: " in result.output


def test_the_rows_a_real_build_dropped_are_readable(build, manifest, runner):
    result = runner.invoke(main, ["inspect", str(build), "--dropped"])
    assert result.exit_code == 0, result.output
    dropped = manifest["counts"]["dropped"]
    assert f"{build}: {sum(dropped.values()):,} dropped rows" in result.output
    if dropped:
        listed = ", ".join(f"{n:,} {reason}" for reason, n in sorted(dropped.items()))
        assert f"dropped: {listed}" in result.output


def test_a_real_build_reports_nulls_and_refuses_bad_families(build, runner):
    nulls = runner.invoke(main, ["inspect", str(build), "--where", "score_quality is null"])
    assert nulls.exit_code == 0 and "matching --where/--family: 0 of " in nulls.output
    result = runner.invoke(main, ["inspect", str(build), "--family", "nosuch"])
    assert result.exit_code == 1
    assert result.output.strip().startswith("Error: --family: unknown family 'nosuch' (known: ")


def console_errors(stderr: str) -> list[str]:
    return [
        line
        for line in stderr.splitlines()
        if "CONSOLE" in line and ("Uncaught" in line or "Error" in line)
    ]


def run_chromium(page: Path, *flags: str) -> subprocess.CompletedProcess:
    chromium = shutil.which("chromium")
    assert chromium, "Debian's chromium is required (.ci/run installs it)"
    return subprocess.run(
        [
            chromium,
            *CHROMIUM_FLAGS,
            f"--user-data-dir={page.parent / 'chromium-profile'}",
            "--enable-logging=stderr",
            "--v=0",
            *flags,
            page.as_uri(),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_console_error_detection_catches_a_broken_page(tmp_path):
    page = tmp_path / "broken.html"
    page.write_text(
        "<!doctype html><html><body><script>undefinedFunction();</script></body></html>"
    )
    assert console_errors(run_chromium(page, "--dump-dom").stderr)


def test_html_report_renders_in_chromium_with_plots_and_samples(build, manifest, tmp_path, runner):
    report = tmp_path / "report.html"
    result = runner.invoke(main, ["inspect", str(build), "--html", str(report)])
    assert result.exit_code == 0, result.output
    text = report.read_text()
    assert "http://" not in text.replace('xmlns="http://www.w3.org/2000/svg"', "")
    assert "https://" not in text

    dom = run_chromium(report, "--dump-dom")
    assert dom.returncode == 0
    assert console_errors(dom.stderr) == []
    html = dom.stdout
    assert html.count("<svg") >= 3  # documents per family, tokens per family, n_tokens
    assert 'id="samples"' in html
    assert html.count("<details>") == manifest["counts"]["kept"]
    for family in manifest["documents_per_family"]:
        assert family in html

    assert 'id="diversity"' in html and "<h3>top first sentences</h3>" in html
    assert '{"text"' not in html and "&quot;text&quot;" not in html  # tables, not JSON
    assert ">None<" not in html

    ARTIFACTS.mkdir(exist_ok=True)
    screenshot = ARTIFACTS / "inspect-report.png"
    shot = run_chromium(report, f"--screenshot={screenshot}", "--window-size=1200,1600")
    assert shot.returncode == 0 and screenshot.stat().st_size > 10_000


MEASURE = """<script>
window.addEventListener('load', function () {
  const cell = document.querySelector('#samples td.doc');
  document.title = 'doc-width=' + Math.round(cell.getBoundingClientRect().width);
});
</script>"""


def test_the_document_column_is_wide_and_missing_scores_say_so(build, tmp_path, runner):
    """Measured in Chromium at 1200 px: the document gets most of the row, and a null
    score reads as a dash titled "missing", never "None"."""
    shard = sorted(build.glob("shard-*.arrow"))[0]
    table = pa.ipc.open_stream(str(shard)).read_all()
    nulls = pa.array([None] * table.num_rows, pa.float64())
    table = table.append_column(pa.field("score_alignment", pa.float64()), nulls)
    path = tmp_path / "shard-00000.arrow"
    with pa.OSFile(str(path), "wb") as sink, pa.ipc.new_stream(sink, table.schema) as writer:
        writer.write_table(table)
    report = tmp_path / "report.html"
    result = runner.invoke(main, ["inspect", str(path), "--html", str(report)])
    assert result.exit_code == 0, result.output
    page = report.read_text()
    assert '<dt>alignment</dt><dd class="missing" title="missing">\u2014</dd>' in page
    report.write_text(page.replace("</body>", MEASURE + "</body>"))
    dom = run_chromium(report, "--dump-dom", "--window-size=1200,1600")
    width = int(dom.stdout.split("doc-width=")[1].split("<")[0])
    assert width >= 700


def test_export_local_dir_is_a_hub_ready_repository(build, manifest, tmp_path, runner, monkeypatch):
    monkeypatch.setenv("HF_TOKEN", "hf_secret_never_written")
    repo = tmp_path / "repo"
    result = runner.invoke(
        main,
        [
            "export",
            str(build),
            "--repo-id",
            "me/stories",
            "--local-dir",
            str(repo),
            "--license",
            "cc-by-4.0",
        ],
    )
    assert result.exit_code == 0, result.output
    kept = manifest["counts"]["kept"]
    parquet_files = sorted((repo / "data").glob("*.parquet"))
    assert len(parquet_files) == len(manifest["shards"])

    loaded = datasets.load_dataset(str(repo), split="train", cache_dir=str(tmp_path / "hf-cache"))
    assert loaded.num_rows == kept
    assert loaded.column_names == shard_columns(build)
    assert sum(pq.read_table(p).num_rows for p in parquet_files) == kept
    assert pq.ParquetFile(parquet_files[0]).metadata.row_group(0).column(0).compression == "ZSTD"
    by_family = dict(
        duckdb.sql(
            f"select family, sum(n_tokens) from '{repo}/data/*.parquet' group by 1"
        ).fetchall()
    )
    assert by_family == manifest["tokens"]["per_family"]

    card = (repo / "README.md").read_text()
    front = yaml.safe_load(card.split("---")[1])
    assert front["license"] == "cc-by-4.0"
    assert front["size_categories"] == ["n<1K"]
    assert front["configs"][0]["data_files"][0] == {
        "split": "train",
        "path": "data/train-*.parquet",
    }
    for fact in (
        manifest["model"]["name"],
        manifest["config_hash"][:16],
        *manifest["templates"].values(),
        "## A sample row",
        "## Filters and thresholds",
    ):
        assert fact in card

    mixing = json.loads((repo / "mixing.json").read_text())
    assert mixing["tokens"] == manifest["tokens"]["total"]
    assert sum(f["tokens"] for f in mixing["files"]) == mixing["tokens"]
    assert {k: v["tokens"] for k, v in mixing["per_family"].items()} == manifest["tokens"][
        "per_family"
    ]
    assert all(
        b"hf_secret_never_written" not in p.read_bytes() for p in repo.rglob("*") if p.is_file()
    )


def test_export_jsonl_and_refusing_a_non_empty_folder(build, manifest, tmp_path, runner):
    out = tmp_path / "mixing"
    result = runner.invoke(
        main, ["export", str(build), "--format", "jsonl", "--local-dir", str(out)]
    )
    assert result.exit_code == 0, result.output
    lines = [json.loads(line) for p in sorted((out / "data").glob("*.jsonl")) for line in p.open()]
    assert len(lines) == manifest["counts"]["kept"]
    assert set(lines[0]) == set(shard_columns(build))

    before = folder_digest(out)
    again = runner.invoke(
        main, ["export", str(build), "--format", "jsonl", "--local-dir", str(out)]
    )
    assert again.exit_code == 1
    assert again.output.strip() == f"Error: {out}: exists and is not empty; choose another folder"
    assert folder_digest(out) == before


@pytest.fixture
def hub(monkeypatch):
    import huggingface_hub

    RecordingHfApi.reset()
    monkeypatch.setattr(huggingface_hub, "HfApi", RecordingHfApi)
    monkeypatch.setenv("HF_TOKEN", "hf_secret_never_printed")
    return RecordingHfApi


def test_upload_makes_the_repo_and_sends_the_local_dir_files(build, hub, tmp_path, runner):
    result = runner.invoke(main, ["export", str(build), "--repo-id", "me/stories", "--private"])
    assert result.exit_code == 0, result.output
    assert "hf_secret_never_printed" not in result.output
    assert hub.tokens == ["hf_secret_never_printed"]
    names = [name for name, _ in hub.calls]
    assert names == ["create_repo", "get_paths_info", "upload_folder", "upload_folder"]
    assert hub.calls[0][1] == {
        "repo_id": "me/stories",
        "private": True,
        "repo_type": "dataset",
        "exist_ok": True,
    }

    local = tmp_path / "local"
    runner.invoke(
        main, ["export", str(build), "--repo-id", "me/stories", "--local-dir", str(local)]
    )
    uploaded = hub.repos["me/stories"].files
    assert sorted(uploaded) == sorted(folder_digest(local))
    assert {k: hashlib.sha256(v).hexdigest() for k, v in uploaded.items()} == folder_digest(local)
    assert all(b"hf_secret_never_printed" not in data for data in uploaded.values())


def test_an_interrupted_upload_resumes_with_the_files_still_missing(
    build, hub, runner, monkeypatch
):
    monkeypatch.setattr(export_module, "UPLOAD_BATCH_FILES", 1)
    shards = len(list(build.glob("shard-*.arrow")))
    assert shards >= 2
    hub.fail_on_upload = 2
    failed = runner.invoke(main, ["export", str(build), "--repo-id", "me/big"])
    assert failed.exit_code == 1
    assert failed.output.strip() == (
        "Error: upload to me/big failed (connection reset by peer); run the same command "
        "again to resume: files already uploaded are skipped"
    )
    assert sorted(hub.repos["me/big"].files) == [f"data/train-00000-of-{shards:05d}.parquet"]

    hub.fail_on_upload = None
    hub.calls.clear()
    resumed = runner.invoke(main, ["export", str(build), "--repo-id", "me/big"])
    assert resumed.exit_code == 0, resumed.output
    sent = [call["files"] for name, call in hub.calls if name == "upload_folder"]
    assert sent[0] == [f"data/train-00001-of-{shards:05d}.parquet"]
    assert len(hub.repos["me/big"].files) == shards + 2


def test_upload_without_a_token_is_one_line(build, runner, monkeypatch, tmp_path):
    monkeypatch.delenv("HF_TOKEN", raising=False)
    monkeypatch.setenv("HF_HOME", str(tmp_path / "empty-hf-home"))
    result = runner.invoke(main, ["export", str(build), "--repo-id", "me/stories"])
    assert result.exit_code == 1
    assert result.output.strip().startswith("Error: no Hugging Face token: set HF_TOKEN")
