"""``sentemb cluster``: community detection (sentence-transformers' definition), k-means or HDBSCAN."""

from __future__ import annotations

from typing import Any

import click
import numpy as np

from sentemb.cli.common import EXIT_CODES_HELP, UsageError, encoder_options
from sentemb.cli.corpus import (
    check_outputs,
    cluster_plot,
    counting,
    progress_bar,
    read_corpus,
    retrieval_errors,
    show_progress,
    write_table,
)
from sentemb.cli.io import ERROR_POLICIES
from sentemb.cli.output import check_installed

EXAMPLES = """\b
Examples:
  sentemb cluster questions.txt -o clusters.jsonl --threshold 0.75 --min-size 10 --plot sizes.png
  sentemb cluster docs.npy -o clusters.parquet --method kmeans --clusters 50
  sentemb cluster docs.parquet -o clusters.csv --method hdbscan --min-size 5

\b
INPUT: texts or vectors, as for `sentemb dedup`. Output rows: id, cluster (0 = largest, -1 = none),
centre (community detection: the community's centre row) and text when known. community: every row
at cosine >= --threshold of a centre, communities of at least --min-size rows, largest first
(exactly sentence-transformers' community_detection). kmeans/hdbscan: scikit-learn on unit vectors.

"""


@click.command(epilog=EXAMPLES + EXIT_CODES_HELP)
@click.argument("input_path", metavar="INPUT")
@click.option("-o", "--output", required=True, metavar="PATH", help="Labels as .jsonl, .parquet or .csv.")
@click.option("--method", type=click.Choice(["community", "kmeans", "hdbscan"]), default="community",
              show_default=True)
@click.option("--threshold", "-t", type=float, default=0.75, show_default=True, help="Cosine (community).")
@click.option("--min-size", type=click.IntRange(min=1), default=10, show_default=True,
              help="Smallest community (community) or cluster (hdbscan).")
@click.option("--clusters", "n_clusters", type=click.IntRange(min=1), default=None, help="k (kmeans).")
@click.option("--seed", type=int, default=0, show_default=True, help="Random seed (kmeans).")
@click.option("--plot", default=None, metavar="PNG",
              help="Also save cluster sizes beside a 2-D PCA map of the rows (.png, .svg, .pdf).")
@click.option("--field", "--column", "field", default="text", show_default=True, help="Field or column with the text.")
@click.option("--id-field", default=None, help="Field or column carried as the id.")
@click.option("--errors", type=click.Choice(ERROR_POLICIES), default="strict", show_default=True)
@click.option("--force", "-f", is_flag=True, help="Overwrite existing outputs.")
@click.option("--progress/--no-progress", default=None, help="Progress bars [default: when stderr is a terminal].")
@click.option("--quiet", "-q", is_flag=True, help="No progress or summary on stderr.")
@encoder_options
def cluster(
    *, input_path: str, output: str, method: str, threshold: float, min_size: int, n_clusters: int | None,
    seed: int, plot: str | None, field: str, id_field: str | None, errors: str, force: bool,
    progress: bool | None, quiet: bool, **encoder_params: Any,
) -> None:  # fmt: skip
    """Cluster the texts (or vectors) of INPUT."""
    from sentemb.retrieval import cluster as clustering
    from sentemb.retrieval.dedup import check_threshold

    if method == "kmeans" and n_clusters is None:
        raise UsageError("--method kmeans needs --clusters K")
    check_threshold(threshold)
    check_outputs(output, plot, force)
    if method != "community":  # scikit-learn's; found missing now, not after the texts are embedded
        check_installed("sklearn", f"--method {method}")
    show = show_progress(progress, quiet)
    with retrieval_errors():
        corpus = read_corpus(input_path, field=field, id_field=id_field, errors=errors, show=show,
                             encoder_params=encoder_params)  # fmt: skip
        centres = np.full(len(corpus.vectors), -1, dtype=np.int64)
        if method == "community":
            with progress_bar("clustering", len(corpus.vectors), show) as advance:
                communities = clustering.community_detection(corpus.vectors, threshold, min_size,
                                                             progress=counting(advance))  # fmt: skip
            labels = clustering.labels_from_communities(communities, len(corpus.vectors))
            for community in communities:
                centres[community] = community[0]
        elif method == "kmeans":
            labels = clustering.kmeans(corpus.vectors, int(n_clusters or 0), seed=seed)
        else:
            labels = clustering.hdbscan(corpus.vectors, min_cluster_size=max(2, min_size))
    columns: dict[str, list[Any]] = {"id": list(corpus.ids), "cluster": labels.tolist()}
    if method == "community":
        columns["centre"] = [corpus.ids[c] if c >= 0 else None for c in centres.tolist()]
    if corpus.texts is not None:
        columns["text"] = list(corpus.texts)
    write_table(output, columns, force)
    sizes = np.bincount(labels[labels >= 0]).tolist() if (labels >= 0).any() else []
    if plot:
        cluster_plot(sizes, labels, corpus.vectors, title=f"{method}: cluster sizes", path=plot, force=force)
    if not quiet:
        clustered = int((labels >= 0).sum())
        click.echo(f"{len(labels):,} rows: {len(sizes):,} clusters (largest {max(sizes, default=0):,}), "
                   f"{len(labels) - clustered:,} rows in none", err=True)  # fmt: skip
