"""Near-duplicate groups (library and `sentemb dedup`): planted duplicates found, exact and index agree, bad input."""

from __future__ import annotations

import json

import numpy as np
import pytest

import sentemb
from cli_helpers import cached_loads, invoke
from sentemb.errors import VectorsError
from sentemb.retrieval.dedup import find_duplicates

RNG = np.random.default_rng(11)


def _unit(x):
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


BASE = _unit(RNG.standard_normal((400, 96)))
# rows 400..459 are near copies of rows 0..59 (cosine ~0.99); 460..469 copies of 400..409 (chains)
COPIES = _unit(BASE[:60] + 0.02 * RNG.standard_normal((60, 96)))
CHAIN = _unit(COPIES[:10] + 0.02 * RNG.standard_normal((10, 96)))
VECTORS = np.concatenate([BASE, COPIES, CHAIN])


def test_planted_duplicates_form_groups_led_by_the_first_row():
    found = find_duplicates(VECTORS, 0.95)
    for i in range(60):
        assert found.representative[400 + i] == i
        assert found.group[400 + i] == found.group[i]
    for i in range(10):  # a copy of a copy joins the same group
        assert found.representative[460 + i] == i
    assert not found.is_duplicate[:400].any() and found.is_duplicate[400:].all()
    assert found.groups == 400 and sorted(found.group_sizes())[-10:] == [3] * 10
    assert np.all(found.similarity[400:] > 0.95) and np.all(found.similarity[:400] == 1.0)


def test_index_backed_search_finds_nearly_the_same_groups_and_no_false_pair():
    exact = find_duplicates(VECTORS, 0.95, method="exact")
    approximate = find_duplicates(VECTORS, 0.95, method="index", neighbours=5)
    # HNSW is approximate (and its multi-threaded build is not deterministic): it may miss a pair, never invent one
    found, truth = ({tuple(p) for p in r.pairs.tolist()} for r in (approximate, exact))
    assert found <= truth and len(found) >= 0.97 * len(truth)
    assert np.mean(exact.representative == approximate.representative) >= 0.98


def test_progress_reports_every_row():
    seen = []
    find_duplicates(VECTORS, 0.9, progress=seen.append)
    assert sum(seen) == len(VECTORS)


@pytest.mark.parametrize("threshold", [-1.5, 1.01, float("nan")])
def test_threshold_outside_the_cosine_range_is_refused(threshold):
    with pytest.raises(sentemb.ConfigError, match=r"outside \[-1, 1\]"):
        find_duplicates(VECTORS, threshold)


def test_empty_input_is_refused():
    with pytest.raises(VectorsError, match="empty"):
        find_duplicates(np.zeros((0, 8), np.float32))


TEXTS = ["A man is playing a guitar.", "A man is playing a guitar!", "The cat sleeps on the sofa.",
         "Stocks fell sharply on Monday.", "A man is playing the guitar.", "A woman slices an onion."]  # fmt: skip


@pytest.mark.usefixtures(cached_loads.__name__)
def test_cli_groups_texts_and_writes_every_row_with_its_representative(tmp_path):
    (tmp_path / "t.txt").write_text("\n".join(TEXTS))
    result = invoke("dedup", str(tmp_path / "t.txt"), "--threshold", "0.95", "-o", str(tmp_path / "g.jsonl"),
                    "--plot", str(tmp_path / "sizes.png"))  # fmt: skip
    rows = [json.loads(line) for line in (tmp_path / "g.jsonl").read_text().splitlines()]
    assert [r["id"] for r in rows] == list(range(len(TEXTS)))
    assert rows[1]["representative"] == 0 and rows[1]["duplicate"] and rows[1]["text"] == TEXTS[1]
    assert rows[2]["representative"] == 2 and not rows[2]["duplicate"]
    assert (tmp_path / "sizes.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "duplicates" in result.stderr
    invoke("dedup", str(tmp_path / "t.txt"), "-o", str(tmp_path / "u.csv"), "--unique", "--threshold", "0.95")
    kept = (tmp_path / "u.csv").read_text().splitlines()
    assert kept[0].startswith("id,group,representative") and len(kept) - 1 < len(TEXTS)


@pytest.mark.usefixtures(cached_loads.__name__)
def test_cli_reads_saved_vectors(tmp_path):
    np.save(tmp_path / "v.npy", VECTORS)
    invoke("dedup", str(tmp_path / "v.npy"), "-o", str(tmp_path / "g.parquet"), "--threshold", "0.95", "-q")
    import pyarrow.parquet as pq

    table = pq.read_table(tmp_path / "g.parquet").to_pydict()
    assert table["representative"][400:460] == list(range(60)) and "text" not in table


@pytest.mark.parametrize(
    ("args", "code", "needle"),
    [
        (["{t}", "-o", "{g}", "--threshold", "1.5"], 2, "outside [-1, 1]"),
        (["{t}", "-o", "{d}/out.txt"], 4, "output format"),
        (["{d}/empty.txt", "-o", "{g}"], 1, "no texts"),
        (["{d}/missing.txt", "-o", "{g}"], 1, "no such file"),
        (["{t}", "-o", "{d}/exists.jsonl"], 4, "already exists"),
    ],
)
def test_cli_bad_input(tmp_path, args, code, needle):
    (tmp_path / "t.txt").write_text("\n".join(TEXTS))
    (tmp_path / "empty.txt").write_text("")
    (tmp_path / "exists.jsonl").write_text("")
    paths = {"t": tmp_path / "t.txt", "g": tmp_path / "g.jsonl", "d": tmp_path}
    result = invoke("dedup", *(a.format(**paths) for a in args), code=code)
    assert needle in result.stderr


@pytest.mark.parametrize(
    ("content", "needle"),
    [(b"\x93NUMPY\x01\x00garbage", "not a readable .npy"), (None, "no vectors")],
)
def test_cli_damaged_or_empty_vectors_are_one_clear_line(tmp_path, content, needle):
    source = tmp_path / "v.npy"
    if content is None:
        np.save(source, np.zeros((0, 16), np.float32))
    else:
        source.write_bytes(content)
    result = invoke("dedup", str(source), "-o", str(tmp_path / "g.jsonl"), code=1)
    assert needle in result.stderr and not (tmp_path / "g.jsonl").exists()
