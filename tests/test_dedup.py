"""Near-duplicate removal: bulk MinHash signatures, the LSH index, the stage, `gen dedup`."""

from __future__ import annotations

import json
import random

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from filters.dedup import DedupConfig, NearDedup
from filters.minhash import MinHasher, jaccard_estimate, normalize
from filters.stage import run_pipeline
from generator.cli import main
from generator.records import Document, content_id

WORDS = [f"w{i}" for i in range(5000)]


def random_text(rng: random.Random, n: int = 300) -> str:
    return " ".join(rng.choice(WORDS) for _ in range(n))


def edited(rng: random.Random, text: str, rate: float) -> str:
    words = text.split()
    for _ in range(round(rate * len(words))):
        words[rng.randrange(len(words))] = rng.choice(WORDS)
    return " ".join(words)


def exact_jaccard(a: str, b: str, n: int = 5) -> float:
    def grams(t: str) -> set[str]:
        w = normalize(t).split()
        return {" ".join(w[i : i + n]) for i in range(len(w) - n + 1)}

    x, y = grams(a), grams(b)
    return len(x & y) / len(x | y)


def doc(index: int, text: str) -> Document:
    return Document(
        index=index, family="f", template="f@1", axes={}, prompt="p", seed=index, text=text
    )


def test_signatures_ignore_case_punctuation_and_spacing():
    hasher = MinHasher()
    a, b, c = hasher.signatures(
        [
            "The tide gauge, at 04:00, read 3.2 metres -- higher than forecast.",
            "the TIDE gauge at 04 00 read 3 2 metres\n\nhigher than forecast!!",
            "The tide gauge at noon read 1.1 metres, lower than forecast.",
        ]
    )
    assert (a == b).all()
    assert not (a == c).all()
    assert a.dtype == np.uint32 and a.shape == (128,)


def test_signatures_do_not_depend_on_batching():
    rng = random.Random(1)
    texts = [random_text(rng, rng.randint(1, 60)) for _ in range(40)]
    together = MinHasher(block_docs=16).signatures(texts)
    one_by_one = np.vstack([MinHasher().signatures([t]) for t in texts])
    assert (together == one_by_one).all()


def test_estimates_track_exact_jaccard():
    rng = random.Random(2)
    hasher = MinHasher()
    errors = []
    for rate in (0.0, 0.01, 0.03, 0.05, 0.1, 0.2) * 8:
        text = random_text(rng)
        copy = edited(rng, text, rate)
        estimate = jaccard_estimate(*hasher.signatures([text, copy]))
        errors.append(estimate - exact_jaccard(text, copy))
    assert abs(np.mean(errors)) < 0.02  # unbiased
    assert np.max(np.abs(errors)) < 0.15  # about 3 standard deviations at 128 permutations


def test_short_documents_are_one_shingle():
    a, b, c = MinHasher().signatures(
        ["Kestrel logged it.", "kestrel logged it", "Kestrel refused."]
    )
    assert (a == b).all() and not (a == c).all()


def test_near_dedup_keeps_the_first_of_each_cluster_and_names_the_original():
    rng = random.Random(3)
    base = [random_text(rng) for _ in range(5)]
    docs = [doc(i, t) for i, t in enumerate(base)]
    copy = edited(rng, base[2], 0.01)
    docs += [
        doc(5, copy),  # near copy of 2
        doc(6, edited(rng, base[0], 0.3)),  # too different: kept
        doc(7, edited(rng, copy, 0.005)),  # copy of the copy: joins 2's cluster
    ]
    stage = NearDedup(DedupConfig())
    kept = [d.index for d in run_pipeline(docs, [stage])]
    assert kept == [0, 1, 2, 3, 4, 6]
    assert stage.stats.dropped == {"near-duplicate": 2}
    assert stage.duplicate_of[docs[5].id] == docs[2].id
    assert stage.duplicate_of[docs[7].id] in {docs[2].id, docs[5].id}
    again = NearDedup(DedupConfig())
    assert [d.index for d in run_pipeline(docs, [again])] == kept
    assert again.duplicate_of == stage.duplicate_of


@pytest.mark.parametrize(
    "bad", [{"threshold": 0}, {"threshold": 1.5}, {"ngram": 0}, {"num_perm": "x"}]
)
def test_dedup_config_validates(bad):
    with pytest.raises(ValueError, match="invalid value"):
        DedupConfig(**bad)


def test_gen_dedup_on_foreign_parquet_without_ids(tmp_path, runner):
    rng = random.Random(4)
    texts = [random_text(rng, 120) for _ in range(30)]
    texts += [edited(rng, texts[3], 0.01), texts[7].upper(), edited(rng, texts[9], 0.4)]
    pq.write_table(
        pa.table({"text": texts, "source": list(range(len(texts)))}), tmp_path / "a.parquet"
    )
    out = tmp_path / "out"
    result = runner.invoke(main, ["dedup", str(tmp_path / "a.parquet"), "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert "kept 31 of 33 rows (2 near-duplicates in 2 clusters)" in result.output
    kept = pq.read_table(out / "shard-00000.parquet")  # Parquet in, Parquet out
    assert kept.column_names == ["id", "text", "source"]
    assert kept.column("source").to_pylist() == [*range(30), 32]
    assert kept.column("id").to_pylist()[0] == content_id(texts[0])
    report = json.loads((out / "dedup-report.json").read_text())
    assert report["rows_in"] == 33 and report["rows_kept"] == 31
    assert {c["kept"]: c["duplicates"] for c in report["clusters"]} == {
        content_id(texts[3]): [content_id(texts[30])],
        content_id(texts[7]): [content_id(texts[31])],
    }


def test_gen_dedup_on_arrow_files_in_a_folder_keeps_given_ids(tmp_path, runner):
    rng = random.Random(5)
    texts = [random_text(rng, 80) for _ in range(4)]
    folder = tmp_path / "in"
    folder.mkdir()
    for part, rows in enumerate([texts[:2], [texts[2], texts[0]]]):
        table = pa.table({"id": [f"doc-{part}-{i}" for i in range(len(rows))], "text": rows})
        with (
            pa.OSFile(str(folder / f"part{part}.arrow"), "wb") as sink,
            pa.ipc.new_file(sink, table.schema) as w,
        ):
            w.write_table(table)
    out = tmp_path / "out"
    result = runner.invoke(main, ["dedup", str(folder), "--out", str(out), "--threshold", "0.9"])
    assert result.exit_code == 0, result.output
    kept = pa.ipc.open_stream(str(out / "shard-00000.arrow")).read_all()
    assert kept.column("id").to_pylist() == ["doc-0-0", "doc-0-1", "doc-1-0"]
    assert json.loads((out / "dedup-report.json").read_text())["config"]["threshold"] == 0.9


def test_gen_dedup_bad_inputs_are_one_line_and_write_nothing(tmp_path, runner):
    no_text = tmp_path / "no-text.parquet"
    pq.write_table(pa.table({"body": ["a"]}), no_text)
    out = tmp_path / "out"
    result = runner.invoke(main, ["dedup", str(no_text), "--out", str(out)])
    assert result.exit_code == 1
    assert result.output.strip() == f"Error: {no_text}: no string column named 'text'"
    assert not out.exists() and not list(tmp_path.glob(".out.tmp-*"))

    not_empty = tmp_path / "full"
    not_empty.mkdir()
    (not_empty / "keep.txt").write_text("mine")
    good = tmp_path / "good.parquet"
    pq.write_table(pa.table({"text": ["one two three four five six"]}), good)
    result = runner.invoke(main, ["dedup", str(good), "--out", str(not_empty)])
    assert result.exit_code == 1
    assert "exists and is not empty" in result.output
    assert [p.name for p in not_empty.iterdir()] == ["keep.txt"]


@pytest.mark.parametrize("num_perm", [32, 64, 128, 256])
def test_band_layout_is_the_one_datasketch_picks(num_perm):
    from datasketch.lsh import _optimal_param

    from filters.minhash import lsh_bands

    for threshold in (0.5, 0.7, 0.8, 0.9, 0.95):
        assert lsh_bands(threshold, num_perm) == _optimal_param(threshold, num_perm, 0.5, 0.5)


def test_band_search_decides_exactly_as_the_one_at_a_time_index():
    """The merge's all-at-once decision (bands, candidate pairs, earliest similar
    earlier document) equals NearDuplicateIndex.add applied in order, clusters with
    chains (a copy of a copy) included."""
    from filters.minhash import (
        NearDuplicateIndex,
        band_hashes,
        candidate_pairs,
        earliest_duplicates,
        lsh_bands,
    )

    rng = random.Random(4)
    texts = [random_text(rng) for _ in range(150)]
    for _ in range(120):
        source = rng.choice(texts)
        texts.append(edited(rng, source, rng.choice([0.0, 0.02, 0.05, 0.1, 0.2])))
    rng.shuffle(texts)
    signatures = MinHasher().signatures(texts)
    index = NearDuplicateIndex(0.8, 128)
    expected = {}
    for k, signature in enumerate(signatures):
        original = index.add(str(k), signature)
        if original is not None:
            expected[k] = int(original)
    bands = band_hashes(signatures, *lsh_bands(0.8, 128))
    a, c = candidate_pairs(bands)
    similar = np.count_nonzero(signatures[a] == signatures[c], axis=1) / 128 >= 0.8
    earliest = earliest_duplicates(a, c, similar, len(texts))
    assert {k: int(e) for k, e in enumerate(earliest) if e >= 0} == expected
    assert len(expected) > 20  # the close copies were found
