"""``sentemb index``: build an ANN index from vectors or texts, search it, describe it."""

from __future__ import annotations

import json
import sys
from typing import Any

import click

from sentemb.cli.common import EXIT_CODES_HELP, InputError, OutputError, encoder_options, load_encoder
from sentemb.cli.corpus import read_corpus, retrieval_errors, show_progress
from sentemb.cli.io import ERROR_POLICIES, texts_from
from sentemb.cli.output import print_rows, table_format

BUILD_EXAMPLES = """\b
Examples:
  sentemb encode docs.jsonl --id-field doc_id -o docs.parquet
  sentemb index build docs.parquet -o docs.index --output-type binary --rescore float
  sentemb index build batch-out/ -o docs.index            # a `sentemb batch` output folder
  sentemb index build docs.jsonl -o docs.index             # texts: embedded first
  sentemb index search docs.index "how do I get a refund?" -k 5

\b
VECTORS: .npy, Parquet with id/embedding columns (`sentemb encode`), a `sentemb batch` folder, or
texts. The index records the model (name, sha256, pooling, normalisation): the one named in the
batch manifest, else the one --model names (default: the default model). Queries from another
model are refused.

"""


@click.group()
def index_group() -> None:
    """Build and search approximate nearest neighbour indexes (usearch)."""


@index_group.command("build", epilog=BUILD_EXAMPLES + EXIT_CODES_HELP)
@click.argument("vectors")
@click.option("-o", "--output", "output_path", required=True, metavar="INDEX", help="Index folder to write.")
@click.option("--output-type", "output_type", type=click.Choice(["float32", "int8", "binary"]), default="float32",
              show_default=True, help="Stored vector type (output quantisation, not compute precision).")
@click.option("--exact", is_flag=True, help="No graph: scan every code (smallest; exact for float32).")
@click.option("--rescore", type=click.Choice(["codes", "int8", "float", "none"]), default=None,
              help="Rescore quantised candidates with the float query against: the codes, or an int8/float32 "
                   "memory-mapped copy (binary only), or not at all [default: int8 for binary, else codes].")
@click.option("--rescore-multiplier", type=click.IntRange(min=1), default=None,
              help="Candidates per hit before rescoring [default: 10 for binary, 4 for int8].")
@click.option("--connectivity", type=click.IntRange(min=2), default=16, show_default=True, help="HNSW links per node.")
@click.option("--expansion-add", type=click.IntRange(min=1), default=128, show_default=True,
              help="HNSW build beam: smaller builds faster, at some recall.")
@click.option("--expansion-search", type=click.IntRange(min=1), default=64, show_default=True,
              help="HNSW search beam, kept with the index: larger finds more true neighbours, slower.")
@click.option("--field", "--column", "field", default="text", show_default=True, help="Text field (text inputs).")
@click.option("--id-field", default=None, help="Field or column carried as the id (text inputs).")
@click.option("--errors", type=click.Choice(ERROR_POLICIES), default="strict", show_default=True)
@click.option("--force", "-f", is_flag=True, help="Replace an existing index.")
@click.option("--progress/--no-progress", default=None, help="Progress bar [default: when stderr is a terminal].")
@click.option("--quiet", "-q", is_flag=True, help="No progress or summary on stderr.")
@encoder_options
def build(
    *, vectors: str, output_path: str, output_type: str, exact: bool, rescore: str | None,
    rescore_multiplier: int | None, connectivity: int, expansion_add: int, expansion_search: int, field: str,
    id_field: str | None, errors: str, force: bool, progress: bool | None, quiet: bool, **encoder_params: Any,
) -> None:  # fmt: skip
    """Build an index from VECTORS and write it to INDEX (a folder)."""
    graph = {"connectivity": connectivity, "expansion_add": expansion_add, "expansion_search": expansion_search}
    with retrieval_errors():
        _build(vectors=vectors, output_path=output_path, output_type=output_type, exact=exact, rescore=rescore,
               rescore_multiplier=rescore_multiplier, graph=graph, field=field, id_field=id_field,
               errors=errors, force=force, show=show_progress(progress, quiet), quiet=quiet,
               encoder_params=encoder_params)  # fmt: skip


def _build(
    *, vectors: str, output_path: str, output_type: str, exact: bool, rescore: str | None,
    rescore_multiplier: int | None, graph: dict[str, Any], field: str, id_field: str | None, errors: str, force: bool,
    show: bool, quiet: bool, encoder_params: dict[str, Any],
) -> None:  # fmt: skip
    from pathlib import Path

    import sentemb
    from sentemb.retrieval.index import as_ids

    target = Path(output_path)
    if target.exists() and not force:
        raise OutputError(f"{output_path}: already exists; use --force to replace it")
    if not target.parent.is_dir():
        raise OutputError(f"{output_path}: folder {str(target.parent)!r} does not exist")
    corpus = read_corpus(vectors, field=field, id_field=id_field, errors=errors, show=show,
                         encoder_params=encoder_params)  # fmt: skip
    model = corpus.model or load_encoder(**encoder_params).describe().to_dict()
    try:
        as_ids(corpus.ids, 0, len(corpus.ids))
        ids: Any = corpus.ids
    except ValueError:
        ids = [str(i) for i in corpus.ids]  # mixed id types (e.g. jsonl): keep them as text
    index = sentemb.Index.build(corpus.vectors, ids, output=output_type, model=model, exact=exact, rescore=rescore,
                                rescore_multiplier=rescore_multiplier, **graph)  # fmt: skip
    index.save(output_path, force=force)
    if not quiet:
        memory = index.memory()
        side = f", {memory['rescore'] / 1e6:,.1f} MB rescoring copy (memory-mapped)" if memory["rescore"] else ""
        click.echo(f"indexed {len(index):,} vectors of {index.dim} ({output_type}, {'exact' if exact else 'hnsw'}) "
                   f"into {output_path}: {memory['index'] / 1e6:,.1f} MB searched in RAM{side}", err=True)  # fmt: skip


@index_group.command("search", epilog=EXIT_CODES_HELP)
@click.argument("index_path", metavar="INDEX")
@click.argument("queries", nargs=-1)
@click.option("--queries", "-q", "queries_file", default=None, help="Queries from a file (- for stdin).")
@click.option("--top-k", "-k", type=click.IntRange(min=1), default=10, show_default=True)
@click.option("--rescore-multiplier", type=click.IntRange(min=1), default=None, help="[default: the index's]")
@click.option("--field", "--column", "field", default="text", show_default=True)
@click.option("--format", "fmt", type=click.Choice(["table", "tsv", "jsonl"]), default=None)
@encoder_options
def search(
    *, index_path: str, queries: tuple[str, ...], queries_file: str | None, top_k: int,
    rescore_multiplier: int | None, field: str, fmt: str | None, **encoder_params: Any,
) -> None:  # fmt: skip
    """Top-k ids of INDEX for each query (embedded with the index's model; another model is refused)."""
    if bool(queries) == bool(queries_file):
        raise click.UsageError("give QUERIES or --queries FILE (one of them)")
    with retrieval_errors():
        _search(index_path=index_path, queries=queries, queries_file=queries_file, top_k=top_k,
                rescore_multiplier=rescore_multiplier, field=field, fmt=fmt, encoder_params=encoder_params)


def _search(
    *, index_path: str, queries: tuple[str, ...], queries_file: str | None, top_k: int, rescore_multiplier: int | None,
    field: str, fmt: str | None, encoder_params: dict[str, Any],
) -> None:  # fmt: skip
    import sentemb

    index = sentemb.Index.load(index_path)
    query_texts = texts_from(queries_file, queries, field=field, errors="strict")
    if not query_texts:
        raise InputError("no queries")
    if encoder_params.get("model") is None and index.model.get("model"):
        encoder_params["model"] = index.model["model"]  # queries default to the index's own model
    encoder = load_encoder(**encoder_params)
    hits = index.search(encoder.encode(query_texts), top_k, model=encoder, rescore_multiplier=rescore_multiplier)
    rows = [[query, rank, hit.id, hit.score] for query, found in zip(query_texts, hits, strict=True)
            for rank, hit in enumerate(found, start=1)]  # fmt: skip
    print_rows(["query", "rank", "id", "score"], rows, table_format(fmt, piped="jsonl"), title=f"top {top_k}")


@index_group.command("info")
@click.argument("index_path", metavar="INDEX")
def info(index_path: str) -> None:
    """What an index holds: count, dimension, options, model, memory (JSON)."""
    import sentemb

    with retrieval_errors():
        index = sentemb.Index.load(index_path, verify=False)
    click.echo(json.dumps(index.describe(), indent=1, default=str), file=sys.stdout)
