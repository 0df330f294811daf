"""Clustering: community detection equals sentence-transformers', k-means/HDBSCAN options, `sentemb cluster`."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from sentence_transformers.util import community_detection as st_community_detection

import sentemb
from cli_helpers import cached_loads, invoke
from sentemb.errors import VectorsError
from sentemb.retrieval import cluster

RNG = np.random.default_rng(5)


def _unit(x):
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


CENTRES = _unit(RNG.standard_normal((12, 48)))
SIZES = [40, 30, 25, 20, 15, 12, 10, 8, 6, 4, 3, 2]
VECTORS = _unit(np.concatenate([c + 0.07 * RNG.standard_normal((n, 48)) for c, n in zip(CENTRES, SIZES, strict=True)]))


def _same_as_sentence_transformers(vectors, threshold, size, batch_size=64):
    ours = cluster.community_detection(vectors, threshold, size, batch_size=batch_size)
    theirs = st_community_detection(torch.from_numpy(vectors), threshold, size, batch_size=batch_size)
    assert [c[0] for c in ours] == [c[0] for c in theirs]  # same centres, same order
    assert [sorted(c) for c in ours] == [sorted(c) for c in theirs]  # same members
    return ours


@pytest.mark.parametrize(("threshold", "size"), [(0.75, 10), (0.6, 5), (0.85, 2), (0.5, 1)])
def test_community_detection_equals_sentence_transformers(threshold, size):
    communities = _same_as_sentence_transformers(VECTORS, threshold, size)
    assert communities and all(len(c) >= size for c in communities)
    assert len({row for c in communities for row in c}) == sum(map(len, communities))  # no row twice
    assert [len(c) for c in communities] == sorted((len(c) for c in communities), reverse=True)


@pytest.mark.slow
def test_community_detection_on_real_sentences_equals_sentence_transformers(default_encoder, sts_dev_path):
    dev = sentemb.read_sts(sts_dev_path)
    vectors = default_encoder.encode(list(dict.fromkeys(dev.sentences1 + dev.sentences2))[:1500])
    assert _same_as_sentence_transformers(vectors, 0.7, 3, batch_size=512)


def test_labels_kmeans_and_hdbscan_find_the_planted_clusters():
    truth = np.repeat(np.arange(len(SIZES)), SIZES)
    labels = cluster.kmeans(VECTORS, len(SIZES), seed=0)
    assert len(set(zip(labels.tolist(), truth.tolist(), strict=True))) <= len(SIZES) + 2
    assert np.bincount(labels).tolist() == sorted(np.bincount(labels).tolist(), reverse=True)  # largest first
    labels = cluster.hdbscan(VECTORS, min_cluster_size=5)
    assert (labels[:40] == labels[0]).mean() > 0.9 and labels[0] >= 0
    labels = cluster.labels_from_communities(cluster.community_detection(VECTORS, 0.75, 10), len(VECTORS))
    assert labels[0] == 0 and (labels == -1).any()


@pytest.mark.parametrize(
    ("call", "error", "needle"),
    [
        (lambda: cluster.community_detection(VECTORS, 1.2), sentemb.ConfigError, "outside"),
        (lambda: cluster.community_detection(VECTORS[:0]), VectorsError, "empty"),
        (lambda: cluster.kmeans(VECTORS[:3], 5), sentemb.ConfigError, "n_clusters=5"),
        (lambda: cluster.hdbscan(VECTORS, min_cluster_size=1), sentemb.ConfigError, "min_cluster_size"),
    ],
)
def test_bad_input(call, error, needle):
    with pytest.raises(error, match=needle):
        call()


def test_progress_reports_every_row():
    seen = []
    cluster.community_detection(VECTORS, 0.75, 10, batch_size=50, progress=seen.append)
    assert sum(seen) == len(VECTORS)


@pytest.mark.usefixtures(cached_loads.__name__)
@pytest.mark.parametrize("method", ["community", "kmeans", "hdbscan"])
def test_cli_clusters_saved_vectors_and_draws_sizes(tmp_path, method):
    np.save(tmp_path / "v.npy", VECTORS)
    extra = {"community": ["--threshold", "0.75"], "kmeans": ["--clusters", "12"], "hdbscan": ["--min-size", "5"]}
    result = invoke("cluster", str(tmp_path / "v.npy"), "-o", str(tmp_path / "c.jsonl"), "--method", method,
                    *extra[method], "--plot", str(tmp_path / "sizes.png"))  # fmt: skip
    rows = [json.loads(line) for line in (tmp_path / "c.jsonl").read_text().splitlines()]
    assert len(rows) == len(VECTORS) and rows[0]["cluster"] == rows[1]["cluster"] >= 0
    if method == "community":
        want = cluster.labels_from_communities(cluster.community_detection(VECTORS, 0.75, 10), len(VECTORS))
        assert [r["cluster"] for r in rows] == want.tolist()
    assert (tmp_path / "sizes.png").read_bytes()[:4] == b"\x89PNG"
    assert "clusters" in result.stderr


@pytest.mark.usefixtures(cached_loads.__name__)
def test_cli_clusters_texts_with_their_ids(tmp_path):
    texts = ["A man plays guitar.", "A man is playing the guitar.", "A guy plays a guitar.", "Stocks fell today."]
    (tmp_path / "t.jsonl").write_text("\n".join(json.dumps({"key": f"k{i}", "text": t}) for i, t in enumerate(texts)))
    invoke("cluster", str(tmp_path / "t.jsonl"), "--id-field", "key", "-o", str(tmp_path / "c.csv"),
           "--threshold", "0.7", "--min-size", "2", "-q")  # fmt: skip
    lines = (tmp_path / "c.csv").read_text().splitlines()
    assert lines[0] == "id,cluster,centre,text" and lines[1].startswith("k0,0,") and lines[4].startswith("k3,-1,,")


@pytest.mark.usefixtures(cached_loads.__name__)
def test_cli_kmeans_needs_k(tmp_path):
    np.save(tmp_path / "v.npy", VECTORS)
    result = invoke("cluster", str(tmp_path / "v.npy"), "-o", str(tmp_path / "c.jsonl"), "--method", "kmeans", code=2)
    assert "--clusters" in result.stderr


def test_projection_2d_separates_planted_groups_and_samples_big_inputs():
    rng = np.random.default_rng(0)
    base = _unit(rng.standard_normal((2, 32)))
    two = _unit(np.concatenate([base[0] + 0.05 * rng.standard_normal((30, 32)),
                                base[1] + 0.05 * rng.standard_normal((30, 32))]))  # fmt: skip
    rows, points = cluster.projection_2d(two)
    assert rows.tolist() == list(range(60)) and points.shape == (60, 2)
    first = np.sign(points[:, 0])
    assert len(set(first[:30])) == 1 and len(set(first[30:])) == 1 and first[0] != first[30]  # PC1 splits them
    rows, points = cluster.projection_2d(VECTORS, max_rows=50, seed=3)
    assert len(rows) == 50 == len(set(rows.tolist())) and np.all(np.diff(rows) > 0) and points.shape == (50, 2)
    assert np.array_equal(rows, cluster.projection_2d(VECTORS, max_rows=50, seed=3)[0])  # seeded
    with pytest.raises(VectorsError, match="empty"):
        cluster.projection_2d(np.zeros((0, 8), np.float32))


def test_cluster_plot_puts_the_sizes_beside_a_map_coloured_by_cluster(monkeypatch):
    import sentemb.cli.output as output
    from sentemb.cli.corpus import cluster_plot

    figures = []
    monkeypatch.setattr(output, "save_figure", lambda figure, path, force: figures.append((figure, path, force)))
    labels = cluster.labels_from_communities(cluster.community_detection(VECTORS, 0.75, 10), len(VECTORS))
    sizes = np.bincount(labels[labels >= 0]).tolist()
    cluster_plot(sizes, labels, VECTORS, title="community: cluster sizes", path="c.png", force=True)
    (figure, path, force), = figures
    bars, scatter = figure.axes
    assert (path, force) == ("c.png", True) and bars.get_title() == "community: cluster sizes"
    assert sum(p.get_height() for p in bars.patches) == len(sizes)  # one count per cluster
    points = scatter.collections[0]
    assert len(points.get_offsets()) == len(VECTORS)
    colours = {tuple(c) for c in points.get_facecolors().round(3)}
    assert len(colours) == min(10, len(sizes)) + (labels < 0).any()  # 10 largest coloured, unclustered grey


@pytest.mark.usefixtures(cached_loads.__name__)
@pytest.mark.parametrize(
    ("case", "args", "code", "needle"),
    [
        ("ok", ["--threshold", "1.5"], 2, "outside [-1, 1]"),
        ("ok", ["--method", "kmeans", "--clusters", "500"], 2, "n_clusters=500 but there are 175 vectors"),
        ("empty", [], 1, "no vectors"),
        ("damaged", [], 1, "not a readable .npy"),
        ("int8", [], 1, "need float32 vectors"),
        ("nan", [], 1, "NaN"),
    ],
)
def test_cli_bad_input_is_one_clear_line_and_writes_nothing(tmp_path, case, args, code, needle):
    source = tmp_path / ("v.parquet" if case == "int8" else "v.npy")
    if case == "int8":
        from sentemb.retrieval.vectors import write_vectors_parquet

        write_vectors_parquet(source, list(range(len(VECTORS))), sentemb.quantize(VECTORS, "int8"), "int8",
                              ranges=np.stack([VECTORS.min(0), VECTORS.max(0)]))  # fmt: skip
    elif case == "damaged":
        source.write_bytes(b"\x93NUMPY\x01\x00garbage")
    else:
        vectors = {"ok": VECTORS, "empty": VECTORS[:0], "nan": np.where(VECTORS > 0.3, np.nan, VECTORS)}[case]
        np.save(source, vectors)
    result = invoke("cluster", str(source), "-o", str(tmp_path / "c.jsonl"), "--plot", str(tmp_path / "c.png"),
                    *args, code=code)  # fmt: skip
    assert needle in result.stderr
    assert not (tmp_path / "c.jsonl").exists() and not (tmp_path / "c.png").exists()
