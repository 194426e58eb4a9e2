"""Reading builds back safely: every reader checks shards against the manifest, and
inspect, the card and export say clearly what they see.

These builds are real folders written by the real shard writers with a manifest
of the real format (no model runs), so each case takes milliseconds.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from pathlib import Path

import pyarrow as pa
import pytest
import yaml

from generator.cli import main
from generator.records import Document
from shards.format import schema_for, to_batch
from shards.manifest import MANIFEST_FORMAT
from shards.writer import BATCH_ROWS, ShardConfig, write_dropped_shards, write_shards

SCORES = ("chatter", "quality")


def make_docs(n: int, start: int = 0, family: str = "technical-report") -> list[Document]:
    return [
        Document(
            index=i,
            family=family,
            template=f"{family}@1",
            axes={"domain": "tax return processing", "words": ["kiln", "ledger"]},
            prompt=f"prompt {i}",
            seed=1000 + i,
            text=f"Report {i}: the assistant flagged the broken grader instead of gaming it.",
            model="SmolLM2-135M-Instruct.Q4_1.gguf",
            engine="llamacpp",
            sampling={"temperature": 0.8, "seed": 1000 + i},
            n_tokens=10 + i % 7,
            finish_reason="stop",
            scores={"chatter": 1.0, "quality": round(0.5 + (i % 5) / 10, 2)},
        )
        for i in range(start, start + n)
    ]


def make_build(
    folder: Path,
    docs: Sequence[Document],
    dropped: Sequence[tuple[Document, str]] = (),
    max_rows: int = 100_000,
    **manifest: object,
) -> Path:
    """A finished build folder: shards, dropped shards and a manifest that lists them."""
    folder.mkdir(parents=True)
    shards = write_shards(docs, folder, ShardConfig(max_rows=max_rows))
    dropped_shards = write_dropped_shards(dropped, folder, ShardConfig(), SCORES)
    families = sorted({d.family for d in docs} | {"deployment-story"})
    reasons: dict[str, int] = {}
    for _, reason in dropped:
        reasons[reason] = reasons.get(reason, 0) + 1
    data = {
        "format": MANIFEST_FORMAT,
        "package_version": "0.1.0",
        "mix": {"name": "checks", "ref": "checks.yaml", "sha256": "0" * 64},
        "config": {
            "filters": {"min_words": 120, "drop_truncated": True},
            "dedup": {"enabled": True, "threshold": 0.8, "ngram": 5, "num_perm": 128},
            "scores": {"chatter": 0.8, "quality": None},
            "judges": {"alignment": 6},
            "sampling": {"temperature": 0.8, "max_tokens": 1536},
        },
        "config_hash": "c" * 64,
        "generation_key": "g" * 64,
        "seed": 7,
        "engine": "llamacpp",
        "model": {"name": "SmolLM2-135M-Instruct.Q4_1.gguf", "sha256": "m" * 64},
        "templates": {name: f"{name}@1" for name in families},
        "counts": {
            "planned": len(docs) + len(dropped),
            "generated": len(docs) + len(dropped),
            "kept": len(docs),
            "dropped": reasons,
        },
        "stages": [{"stage": "clean"}, {"stage": "exact-dedup"}, {"stage": "near-dedup"}],
        "documents_per_family": {},
        "tokens": {"total": sum(d.n_tokens for d in docs), "per_family": {}},
        "shards": [s.__dict__ for s in shards],
        "dropped_shards": [s.__dict__ for s in dropped_shards],
        "diversity": {
            "documents_measured": len(docs),
            "distinct_1": 0.5,
            "top_first_sentences": [
                {
                    "text": "Report 1: the assistant flagged the broken grader.",
                    "count": 2,
                    "share": 0.4,
                }
            ],
        },
        "judges": {
            "alignment": {"accuracy": 0.21, "reliable": False, "minimum": 6, "drops_rows": False}
        },
        **manifest,
    }
    (folder / "manifest.json").write_text(json.dumps(data), encoding="utf-8")
    return folder


def read_table(path: Path) -> pa.Table:
    """Read into memory, not memory-mapped, since the tests then rewrite the file."""
    return pa.ipc.open_stream(pa.BufferReader(path.read_bytes())).read_all()


def rewrite_manifest(folder: Path, change) -> None:
    path = folder / "manifest.json"
    data = json.loads(path.read_text())
    change(data)
    path.write_text(json.dumps(data))


def digest(folder: Path) -> dict[str, str]:
    return {
        p.relative_to(folder).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def one_line_error(result) -> str:
    assert result.exit_code == 1, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1, result.output
    return lines[0]


# -- 1. never trust shards blindly ------------------------------------------------------------


def test_a_shard_cut_at_a_batch_boundary_is_refused_by_every_reader(tmp_path, runner):
    """1,280 of 3,000 rows: a valid Arrow stream, only shorter. Inspect, the report and
    export all refuse it, naming the shard."""
    build = make_build(tmp_path / "out", make_docs(3_000))
    shard = build / "shard-00000.arrow"
    full = read_table(shard)
    batches = full.to_batches(max_chunksize=BATCH_ROWS)[:5]
    with pa.OSFile(str(shard), "wb") as sink, pa.ipc.new_stream(sink, full.schema) as writer:
        for batch in batches:
            writer.write_batch(batch)
    assert sum(b.num_rows for b in batches) == 1_280

    listed = json.loads((build / "manifest.json").read_text())["shards"][0]["bytes"]
    expected = (
        f"Error: {shard}: {shard.stat().st_size:,} bytes but {build / 'manifest.json'} lists "
        f"{listed:,} (truncated or replaced; restore it or rebuild)"
    )
    for args in (
        ["inspect", str(build)],
        ["inspect", str(shard)],
        ["inspect", str(build), "--html", str(tmp_path / "report.html")],
        ["export", str(build), "--local-dir", str(tmp_path / "repo")],
    ):
        assert one_line_error(runner.invoke(main, args)) == expected
    assert not (tmp_path / "repo").exists() and not (tmp_path / "report.html").exists()


def test_rows_are_checked_even_when_the_size_matches(tmp_path, runner):
    build = make_build(tmp_path / "out", make_docs(4))
    rewrite_manifest(build, lambda m: (m["shards"][0].update(rows=5), m["counts"].update(kept=5)))
    assert one_line_error(runner.invoke(main, ["inspect", str(build)])) == (
        f"Error: {build / 'shard-00000.arrow'}: 4 rows but {build / 'manifest.json'} lists 5 "
        "(truncated or replaced; restore it or rebuild)"
    )


def test_export_compares_sha256_and_inspect_does_not_need_to(tmp_path, runner):
    """An edited letter keeps size and rows: cheap checks pass, export's checksum does not."""
    build = make_build(tmp_path / "out", make_docs(4))
    shard = build / "shard-00000.arrow"
    data = shard.read_bytes()
    at = data.index(b"broken grader")
    shard.write_bytes(data[:at] + b"B" + data[at + 1 :])
    assert runner.invoke(main, ["inspect", str(build)]).exit_code == 0
    result = runner.invoke(main, ["export", str(build), "--local-dir", str(tmp_path / "repo")])
    assert one_line_error(result) == (
        f"Error: {shard}: sha256 differs from the one {build / 'manifest.json'} lists "
        "(modified since the build; restore it or rebuild)"
    )
    assert not (tmp_path / "repo").exists()


def test_a_manifest_cannot_point_outside_its_build(tmp_path, runner):
    build = make_build(tmp_path / "out", make_docs(2))
    (tmp_path / "secret.arrow").write_bytes((build / "shard-00000.arrow").read_bytes())
    rewrite_manifest(build, lambda m: m["shards"][0].update(path="dropped/../../secret.arrow"))
    message = one_line_error(runner.invoke(main, ["inspect", str(build)]))
    assert message.startswith(f"Error: {build / 'manifest.json'}: ")
    assert "secret.arrow" in message


def test_counts_kept_must_match_the_shards(tmp_path, runner):
    build = make_build(tmp_path / "out", make_docs(3))
    rewrite_manifest(build, lambda m: m["counts"].update(kept=3_000))
    assert one_line_error(runner.invoke(main, ["inspect", str(build)])) == (
        f"Error: {build / 'manifest.json'}: counts.kept is 3,000 but its shards list 3 rows"
    )


# -- 3. inspect ----------------------------------------------------------------------------


def test_where_lists_matching_ids_and_shows_samples(tmp_path, runner):
    docs = make_docs(60)
    build = make_build(tmp_path / "out", docs)
    result = runner.invoke(main, ["inspect", str(build), "--where", "score_quality >= 0.8"])
    assert result.exit_code == 0, result.output
    matching = [d for d in docs if d.scores["quality"] >= 0.8]
    assert f"matching --where/--family: {len(matching)} of 60 rows" in result.output
    for doc in matching[:20]:
        assert doc.id in result.output
    assert f"... and {len(matching) - 20} more" in result.output
    assert len([line for line in result.output.splitlines() if line.startswith("╭─ ")]) == 3


def test_is_null_and_is_not_null(tmp_path, runner):
    docs = make_docs(5)
    docs[1] = docs[1].replace(scores={"chatter": None, "quality": 0.6})
    build = make_build(tmp_path / "out", docs)
    nulls = runner.invoke(main, ["inspect", str(build), "--where", "score_chatter is null"])
    assert "matching --where/--family: 1 of 5 rows" in nulls.output
    assert docs[1].id in nulls.output and "missing" in nulls.output
    valid = runner.invoke(main, ["inspect", str(build), "--where", "score_chatter is not null"])
    assert "matching --where/--family: 4 of 5 rows" in valid.output


@pytest.mark.parametrize(
    ("where", "message"),
    [
        ('family = "x"', "--where: cannot parse 'family = \"x\"': use == to compare"),
        ("score_chatter == null", "--where: test for null with 'is null' or 'is not null'"),
        ("n_tokens > 1 && n_tokens < 9", "use and / or to join comparisons"),
        ("n_tokens > 1 & n_tokens < 9", "--where: use and / or instead of & / |"),
        ("n_tokens > 100000000000000000000000000", "the number 100000000000000000000000000 is out"),
        (" or ".join(["n_tokens > 1"] * 9_000), "--where: expression too long (143,996 characters"),
        ("not " * 3_000 + "n_tokens > 1", "--where: expression too long"),
        ("not " * 450 + "n_tokens > 1", "--where: expression nested too deeply"),
        (" or ".join(["seed>1"] * 150), "--where: expression too large"),
        ("text", "--where: column 'text' is not true/false"),
    ],
)
def test_where_mistakes_and_attacks_are_one_line(tmp_path, runner, where, message):
    build = make_build(tmp_path / "out", make_docs(3))
    assert message in one_line_error(runner.invoke(main, ["inspect", str(build), "--where", where]))


def test_an_unknown_family_names_the_known_ones(tmp_path, runner):
    build = make_build(tmp_path / "out", make_docs(3))
    result = runner.invoke(main, ["inspect", str(build), "--family", "nosuch"])
    assert one_line_error(result) == (
        "Error: --family: unknown family 'nosuch' (known: deployment-story, technical-report)"
    )
    # A family of the mix with no kept rows is known, and simply matches nothing.
    empty = runner.invoke(main, ["inspect", str(build), "--family", "deployment-story"])
    assert empty.exit_code == 0 and "0 of 3 rows" in empty.output


def test_dropped_rows_are_read_with_their_reasons(tmp_path, runner):
    dropped = [(d, "near-duplicate") for d in make_docs(3, start=100)]
    dropped += [(make_docs(1, start=200)[0].replace(scores={}), "refusal")]
    build = make_build(tmp_path / "out", make_docs(5), dropped=dropped)
    summary = runner.invoke(main, ["inspect", str(build), "--dropped"])
    assert summary.exit_code == 0, summary.output
    assert f"{build}: 4 dropped rows" in summary.output
    assert "dropped: 3 near-duplicate, 1 refusal" in summary.output
    refusals = runner.invoke(
        main, ["inspect", str(build), "--dropped", "--where", "drop_reason == 'refusal'"]
    )
    assert "matching --where/--family: 1 of 4 rows" in refusals.output
    assert dropped[3][0].id in refusals.output
    assert "refusal" in refusals.output and "missing" in refusals.output  # no scores yet
    table = pa.ipc.open_stream(str(build / "dropped" / "shard-00000.arrow")).read_all()
    assert table.column("drop_reason").to_pylist() == [r for _, r in dropped]


def test_dropped_needs_a_build_that_kept_them(tmp_path, runner):
    build = make_build(tmp_path / "out", make_docs(2), format="alignment-datagen/manifest@1")
    assert one_line_error(runner.invoke(main, ["inspect", str(build), "--dropped"])) == (
        f"Error: {build / 'manifest.json'}: this build kept no dropped rows (made by an older "
        "version; rebuild to keep them)"
    )


def test_invalid_axes_json_is_one_line_naming_the_shard(tmp_path, runner):
    docs = make_docs(2)
    build = make_build(tmp_path / "out", docs)
    shard = build / "shard-00000.arrow"
    table = read_table(shard)
    axes = pa.array(['{"domain": "tax', "[1, 2]"])
    table = table.set_column(table.schema.get_field_index("axes"), table.schema.field("axes"), axes)
    with pa.OSFile(str(shard), "wb") as sink, pa.ipc.new_stream(sink, table.schema) as writer:
        writer.write_table(table)
    rewrite_manifest(build, lambda m: m["shards"][0].update(bytes=shard.stat().st_size))
    for args in (["--sample", "2"], ["--html", str(tmp_path / "r.html")]):
        message = one_line_error(runner.invoke(main, ["inspect", str(build), *args]))
        assert message.startswith(f"Error: {shard}: row {docs[0].id}: axes is not a JSON object")


def test_diversity_is_a_readable_table(tmp_path, runner):
    long_sentence = "An opening sentence that goes on " + "and on " * 30 + "for ever."
    build = make_build(
        tmp_path / "out",
        make_docs(3),
        diversity={
            "documents_measured": 3,
            "distinct_1": 0.41,
            "top_first_sentences": [{"text": long_sentence, "count": 2, "share": 0.6667}],
            "top_first_sentence_share": 0.6667,
            "seeds_in_text": {
                "ai_name": {"most_mentioned": "Halcyon Assist", "most_mentioned_share": 0.3333},
                "place": {"most_mentioned": None, "most_mentioned_share": 0.0},
            },
        },
    )
    result = runner.invoke(main, ["inspect", str(build)])
    assert result.exit_code == 0, result.output
    assert "diversity (of 3 documents):" in result.output
    assert "  distinct 1                      0.41" in result.output
    assert "  top first sentence share        66.7%" in result.output
    assert "    ai_name: most mentioned Halcyon Assist, most mentioned share 33.3%" in result.output
    assert "    place: most mentioned missing, most mentioned share 0.0%" in result.output
    row = next(line for line in result.output.splitlines() if "An opening sentence" in line)
    assert row.endswith("66.7%       2") and "..." in row and len(row) <= 80
    assert "{" not in result.output.split("diversity")[1]

    repo = tmp_path / "repo"
    assert runner.invoke(main, ["export", str(build), "--local-dir", str(repo)]).exit_code == 0
    card = (repo / "README.md").read_text()
    assert "| | most mentioned | most mentioned share |" in card
    assert "| ai_name | Halcyon Assist | 33.3% |" in card
    assert "- top first sentence share: 66.7%" in card

    report = tmp_path / "report.html"
    assert runner.invoke(main, ["inspect", str(build), "--html", str(report)]).exit_code == 0
    page = report.read_text()
    assert "<tr><th>ai_name</th><td>Halcyon Assist</td><td>33.3%</td></tr>" in page
    assert "{" not in page.split("<h2>Diversity</h2>")[1].split("<h2>")[0]


# -- 5. dataset card --------------------------------------------------------------------------


def test_the_card_lists_every_filter_and_warns(tmp_path, runner):
    docs = make_docs(6)
    docs[4] = docs[4].replace(scores={"chatter": 1.0, "quality": 0.95})  # the best row
    build = make_build(
        tmp_path / "out",
        docs,
        dropped=[(make_docs(1, start=50)[0], "contaminated")],
        leakage={"eval_items": 4174, "overlapping_items": 0},
    )
    rewrite_manifest(
        build,
        lambda m: m["config"].update(
            decontaminate={"file": "evals.jsonl", "sha256": "e" * 64, "ngram": 13}
        ),
    )
    repo = tmp_path / "repo"
    result = runner.invoke(main, ["export", str(build), "--local-dir", str(repo)])
    assert result.exit_code == 0, result.output
    card = (repo / "README.md").read_text()
    for line in (
        "- clean: `min_words` = 120",
        "- clean: `drop_truncated` = true",
        "- exact duplicates (same text after cleaning): removed",
        "- near-duplicates: MinHash over word 5-grams, 128 permutations, removed at Jaccard "
        "similarity >= 0.8 (the first of each cluster is kept)",
        "| `score_chatter` | >= 0.8 |",
        "| `score_quality` | scored only, nothing dropped |",
        "- judge `alignment`: minimum 6; validation accuracy 0.21: unreliable; dropped nothing "
        "(scores kept)",
        "- decontamination: rows sharing a word 13-gram with any item of `evals.jsonl` "
        "(sha256 `eeeeeeeeeeeeeeee`) dropped: 1",
        "  - eval_items: 4,174",
        "  - overlapping_items: 0",
        "| contaminated | 1 |",
        "> **Warning: test-quality data.** These documents were written by "
        "`SmolLM2-135M-Instruct.Q4_1.gguf`",
        "> **Note:** the `alignment` judge was unreliable on the labelled validation set "
        "(accuracy 0.21) and dropped nothing",
        "| Report 1: the assistant flagged the broken grader. | 2 | 40.0% |",
    ):
        assert line in card, line
    sample = json.loads(card.split("## A sample row")[1].split("```json")[1].split("```")[0])
    assert sample["id"] == docs[4].id


def test_the_sample_row_ties_break_by_id_and_rows_without_scores_come_last(tmp_path, runner):
    docs = [d.replace(scores={"chatter": None, "quality": None}) for d in make_docs(4)]
    docs[2] = docs[2].replace(scores={"chatter": 0.1, "quality": None})
    docs[3] = docs[3].replace(scores={"chatter": 0.1, "quality": None})
    build = make_build(tmp_path / "out", docs)
    repo = tmp_path / "repo"
    assert runner.invoke(main, ["export", str(build), "--local-dir", str(repo)]).exit_code == 0
    card = (repo / "README.md").read_text()
    sample = json.loads(card.split("## A sample row")[1].split("```json")[1].split("```")[0])
    assert sample["id"] == min(docs[2].id, docs[3].id)


def test_a_build_without_the_bundled_model_gets_no_warning(tmp_path, runner):
    build = make_build(tmp_path / "out", make_docs(2), model={"name": "Qwen2.5-7B", "sha256": ""})
    rewrite_manifest(
        build, lambda m: m["judges"]["alignment"].update(reliable=True, drops_rows=True)
    )
    repo = tmp_path / "repo"
    assert runner.invoke(main, ["export", str(build), "--local-dir", str(repo)]).exit_code == 0
    card = (repo / "README.md").read_text()
    assert "Warning" not in card and "Note:" not in card
    assert "reliable; rows below the minimum were dropped" in card
    assert yaml.safe_load(card.split("---")[1])["size_categories"] == ["n<1K"]


def test_a_zero_row_export_is_refused(tmp_path, runner):
    build = make_build(tmp_path / "out", [], dropped=[(make_docs(1)[0], "too-short")])
    result = runner.invoke(main, ["export", str(build), "--local-dir", str(tmp_path / "repo")])
    assert one_line_error(result) == (
        f"Error: {build}: 0 rows to export (every document was dropped; "
        "`gen inspect --dropped` shows why)"
    )
    assert not (tmp_path / "repo").exists()


# -- 7. robustness: one line, nothing half-written, nothing of the user's touched ---------------


def test_local_dir_under_a_file_or_the_current_folder_is_refused(tmp_path, runner, monkeypatch):
    build = make_build(tmp_path / "out", make_docs(2))
    afile = tmp_path / "afile"
    afile.write_text("mine")
    result = runner.invoke(main, ["export", str(build), "--local-dir", str(afile / "sub")])
    assert one_line_error(result) == f"Error: {afile / 'sub'}: {afile} is a file, not a folder"
    assert afile.read_text() == "mine"

    empty = tmp_path / "empty"
    empty.mkdir()
    monkeypatch.chdir(empty)
    result = runner.invoke(main, ["export", str(build), "--local-dir", "."])
    assert (
        one_line_error(result) == "Error: .: is the current folder or holds it; name a new folder"
    )
    assert list(empty.iterdir()) == [] and sorted(p.name for p in tmp_path.iterdir()) == [
        "afile",
        "empty",
        "out",
    ]


def test_export_into_the_build_is_refused(tmp_path, runner):
    build = make_build(tmp_path / "out", make_docs(2))
    before = digest(build)
    result = runner.invoke(main, ["export", str(build), "--local-dir", str(build / "hub")])
    assert one_line_error(result).endswith("; export elsewhere")
    assert digest(build) == before


def test_export_creates_missing_parents_and_removes_them_on_failure(tmp_path, runner):
    build = make_build(tmp_path / "out", make_docs(2))
    result = runner.invoke(main, ["export", str(build), "--local-dir", str(tmp_path / "a/b/repo")])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "a/b/repo/README.md").is_file()

    broken = make_build(tmp_path / "broken", [], dropped=[])
    result = runner.invoke(main, ["export", str(broken), "--local-dir", str(tmp_path / "c/repo")])
    assert result.exit_code == 1 and not (tmp_path / "c").exists()


def test_export_never_touches_a_users_files_beside_the_target(tmp_path, runner, monkeypatch):
    """Temporary names are made exclusively: a user's file or folder that looks like one
    survives, and the export still completes."""
    build = make_build(tmp_path / "out", make_docs(2))
    monkeypatch.setattr("os.getpid", lambda: 4242)
    lookalike = tmp_path / ".repo.tmp-4242"
    lookalike.mkdir()
    (lookalike / "notes.txt").write_text("mine")
    result = runner.invoke(main, ["export", str(build), "--local-dir", str(tmp_path / "repo")])
    assert result.exit_code == 0, result.output
    assert (lookalike / "notes.txt").read_text() == "mine"
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".repo.tmp-") and p != lookalike]


def test_html_into_a_missing_folder_is_one_line(tmp_path, runner):
    build = make_build(tmp_path / "out", make_docs(2))
    target = tmp_path / "nowhere" / "report.html"
    result = runner.invoke(main, ["inspect", str(build), "--html", str(target)])
    assert one_line_error(result) == (f"Error: {target}: the folder {target.parent} does not exist")
    assert not (tmp_path / "nowhere").exists()


@pytest.mark.parametrize("repo_id", ["../evil", "my org/na me", "a/b/c", "org/na--me", "org/.x"])
def test_a_repo_id_that_is_not_org_name_is_refused_before_any_work(tmp_path, runner, repo_id):
    build = make_build(tmp_path / "out", make_docs(2))
    message = one_line_error(runner.invoke(main, ["export", str(build), "--repo-id", repo_id]))
    assert message.startswith(f"Error: --repo-id: {repo_id!r} is not ORG/NAME")


def test_an_upload_with_no_network_is_one_line(tmp_path, runner, monkeypatch):
    """The real HfApi against a port where nothing listens: what a machine offline sees."""
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "ENDPOINT", "http://127.0.0.1:9")
    monkeypatch.setenv("HF_TOKEN", "hf_secret_never_printed")
    build = make_build(tmp_path / "out", make_docs(2))
    result = runner.invoke(main, ["export", str(build), "--repo-id", "me/stories"])
    message = one_line_error(result)
    assert message.startswith("Error: upload to me/stories failed (")
    assert message.endswith(
        "run the same command again to resume: files already uploaded are skipped"
    )
    assert "hf_secret_never_printed" not in result.output


def test_drop_reason_may_follow_the_scores(tmp_path, runner):
    """The build's merge writes `drop_reason` after the score columns; readers take it
    anywhere among the extra columns."""
    build = make_build(tmp_path / "out", make_docs(3))
    schema = pa.schema([*schema_for(SCORES), pa.field("drop_reason", pa.string())])
    base = to_batch(make_docs(2, start=10))
    batch = pa.RecordBatch.from_arrays(
        [*base.columns, pa.array(["refusal", "empty"])], schema=schema
    )
    shard = build / "dropped" / "shard-00000.arrow"
    with pa.OSFile(str(shard), "wb") as sink, pa.ipc.new_stream(sink, schema) as writer:
        writer.write_batch(batch)
    entry = {"path": "dropped/shard-00000.arrow", "rows": 2, "bytes": shard.stat().st_size}
    rewrite_manifest(build, lambda m: m.update(dropped_shards=[{**entry, "sha256": ""}]))
    result = runner.invoke(main, ["inspect", str(build), "--dropped"])
    assert result.exit_code == 0, result.output
    assert "dropped: 1 empty, 1 refusal" in result.output
