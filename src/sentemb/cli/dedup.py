"""``sentemb dedup``: near-duplicate groups, a representative per group, from texts or saved vectors."""

from __future__ import annotations

from typing import Any

import click

from sentemb.cli.common import EXIT_CODES_HELP, encoder_options
from sentemb.cli.corpus import (
    check_outputs,
    counting,
    progress_bar,
    read_corpus,
    retrieval_errors,
    show_progress,
    size_histogram,
    write_table,
)
from sentemb.cli.io import ERROR_POLICIES
from sentemb.cli.output import check_installed

EXAMPLES = """\b
Examples:
  sentemb dedup questions.txt -o groups.jsonl              # --threshold 0.9
  sentemb dedup docs.parquet --threshold 0.9 -o groups.parquet --unique --plot sizes.png
  sentemb encode docs.jsonl -o docs.npy && sentemb dedup docs.npy -o groups.csv

\b
INPUT: texts (.txt, .jsonl, .csv, .tsv, .parquet, as `sentemb encode` reads them) or vectors (.npy,
Parquet with an embedding column, a `sentemb batch` folder). Output rows: id, group, representative
(the group's first row's id), duplicate (not the representative), similarity (cosine to the
representative) and text when known; --unique keeps one row per group. Rows joined by any pair at
cosine >= THRESHOLD form a group. Exact up to 50,000 rows, an HNSW index beyond (--method).

"""


@click.command(epilog=EXAMPLES + EXIT_CODES_HELP)
@click.argument("input_path", metavar="INPUT")
@click.option("-o", "--output", required=True, metavar="PATH", help="Groups as .jsonl, .parquet or .csv.")
@click.option("--threshold", "-t", type=float, default=0.9, show_default=True,
              help="Cosine in [-1, 1] (0.9 groups 77% of STS gold-5.0 pairs, 1.1% of pairs scored <= 2).")
@click.option("--method", type=click.Choice(["auto", "exact", "index"]), default="auto", show_default=True)
@click.option("--neighbours", type=click.IntRange(min=1), default=20, show_default=True,
              help="Neighbours checked per row (--method index).")
@click.option("--unique", is_flag=True, help="Write only each group's representative.")
@click.option("--plot", default=None, metavar="PNG", help="Also save a histogram of group sizes (.png, .svg, .pdf).")
@click.option("--field", "--column", "field", default="text", show_default=True, help="Field or column with the text.")
@click.option("--id-field", default=None, help="Field or column carried as the id.")
@click.option("--errors", type=click.Choice(ERROR_POLICIES), default="strict", show_default=True)
@click.option("--force", "-f", is_flag=True, help="Overwrite existing outputs.")
@click.option("--progress/--no-progress", default=None, help="Progress bars [default: when stderr is a terminal].")
@click.option("--quiet", "-q", is_flag=True, help="No progress or summary on stderr.")
@encoder_options
def dedup(
    *, input_path: str, output: str, threshold: float, method: str, neighbours: int, unique: bool, plot: str | None,
    field: str, id_field: str | None, errors: str, force: bool, progress: bool | None, quiet: bool,
    **encoder_params: Any,
) -> None:  # fmt: skip
    """Group near-duplicate texts (or vectors) of INPUT and pick a representative per group."""
    from sentemb.retrieval.dedup import check_threshold, find_duplicates

    check_threshold(threshold)
    check_outputs(output, plot, force)
    if method == "index":  # usearch's HNSW; found missing now, not after the texts are embedded
        check_installed("usearch", "--method index")
    show = show_progress(progress, quiet)
    with retrieval_errors():
        corpus = read_corpus(input_path, field=field, id_field=id_field, errors=errors, show=show,
                             encoder_params=encoder_params)  # fmt: skip
        with progress_bar("grouping", len(corpus.vectors), show) as advance:
            found = find_duplicates(corpus.vectors, threshold, method=method, neighbours=neighbours,
                                    progress=counting(advance))  # fmt: skip
    keep = [i for i in range(len(corpus.ids)) if not (unique and found.is_duplicate[i])]
    columns: dict[str, list[Any]] = {
        "id": [corpus.ids[i] for i in keep],
        "group": found.group[keep].tolist(),
        "representative": [corpus.ids[int(found.representative[i])] for i in keep],
        "duplicate": found.is_duplicate[keep].tolist(),
        "similarity": [round(float(s), 6) for s in found.similarity[keep]],
    }
    if corpus.texts is not None:
        columns["text"] = [corpus.texts[i] for i in keep]
    write_table(output, columns, force)
    sizes = found.group_sizes()
    if plot:
        size_histogram([s for s in sizes if s > 1], f"near-duplicate groups at cosine >= {threshold}", plot, force)
    if not quiet:
        multi = sum(1 for s in sizes if s > 1)
        click.echo(f"{len(corpus.ids):,} rows, {int(found.is_duplicate.sum()):,} duplicates in {multi:,} groups "
                   f"(largest {max(sizes):,}); {found.groups:,} rows kept by --unique", err=True)  # fmt: skip
