"""``sentemb rerank``: documents scored against each query by a cross-encoder, best first."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import click

from sentemb.cli.common import EXIT_CODES_HELP, InputError, UsageError, load_reranker, reranker_options
from sentemb.cli.io import ERROR_POLICIES, make_source, read_all, texts_from
from sentemb.cli.output import print_rows, table_format

if TYPE_CHECKING:
    from sentemb.rerank import Reranker

EXAMPLES = """\b
Examples:
  sentemb rerank "how do I reset my password?" --docs faq.txt -m ./ms-marco-MiniLM-L6-v2 -k 3
  sentemb rerank --queries questions.txt --docs docs.jsonl --field body --id-field doc_id -m ./bge-reranker-base
  sentemb search "refunds" --corpus docs.jsonl --field body -k 5 --rerank ./bge-reranker-base --rerank-candidates 50

\b
Every document is scored against each query with the cross-encoder (-m, required) and the best -k
are printed: a table on a terminal, JSON lines when piped. --docs takes the formats `sentemb
search --corpus` takes (.txt, .jsonl, .csv, .tsv, .parquet) with the same --field, --id-field
and --errors.

"""


@click.command(epilog=EXAMPLES + EXIT_CODES_HELP)
@click.argument("queries", nargs=-1)
@click.option("--queries", "queries_file", default=None, help="Queries from a file (- for stdin).")
@click.option("--docs", "-d", "docs", required=True, help="Documents (.txt, .jsonl, .csv, .tsv, .parquet).")
@click.option("--field", "--column", "field", default="text", show_default=True, help="Field or column with the text.")
@click.option("--id-field", default=None, help="Documents' field or column to report as the id.")
@click.option("--top-k", "-k", type=click.IntRange(min=1), default=10, show_default=True, help="Documents per query.")
@click.option("--activation", type=click.Choice(["sigmoid", "identity", "tanh"]), default=None,
              help="Replace the model's activation [default: the model's, as sentence-transformers].")
@click.option("--rescore", is_flag=True, help="With --precision int8: re-score in fp32 the documents that could "
              "be in the top -k, so they come in fp32's order with fp32's scores.")
@click.option("--errors", type=click.Choice(ERROR_POLICIES), default="strict", show_default=True,
              help="Invalid UTF-8 or a row without text: stop, replace bad bytes, or skip the row.")
@click.option("--format", "fmt", type=click.Choice(["table", "tsv", "jsonl"]), default=None,
              help="Output style [default: table on a terminal, jsonl when piped].")
@reranker_options
def rerank(
    *, queries: tuple[str, ...], queries_file: str | None, docs: str, field: str, id_field: str | None, top_k: int,
    activation: str | None, rescore: bool, errors: str, fmt: str | None, **reranker_params: Any,
) -> None:  # fmt: skip
    """Score documents against each query with a cross-encoder, best first."""
    if bool(queries) == bool(queries_file):
        raise UsageError("give QUERIES or --queries FILE (one of them)")
    if not reranker_params.get("model"):
        raise UsageError("give the cross-encoder with -m/--model (a folder or hub id)")
    query_texts = texts_from(queries_file, queries, field=field, errors=errors, what="QUERY")
    if not query_texts:
        raise InputError("no queries left to rerank (every one was skipped)")
    ids, texts = read_all(make_source(docs, input_format=None, field=field, id_field=id_field, errors=errors))
    if not texts:
        raise InputError(f"{docs}: no documents")
    reranker = load_reranker(activation, rescore, **reranker_params)
    candidates = [[(doc_id, None, text) for doc_id, text in zip(ids, texts, strict=True)]] * len(query_texts)
    columns, rows = reranked_rows(reranker, query_texts, candidates, top_k)
    print_rows(columns, rows, table_format(fmt, piped="jsonl"), title=f"top {top_k}")


def reranked_rows(
    reranker: Reranker, queries: list[str], candidates: Sequence[Sequence[tuple[Any, float | None, str]]], top_k: int
) -> tuple[list[str], list[list[Any]]]:
    """Output rows (query, rank, id, score[, retrieval score], text) of each query's candidates
    (id, retrieval score or None, text), reranked, the best ``top_k``."""
    retrieved = any(score is not None for found in candidates for _, score, _ in found)
    rows: list[list[Any]] = []
    for query, found in zip(queries, candidates, strict=True):
        if not found:
            continue
        hits = reranker.rank(query, [text for _, _, text in found], top_k=top_k)
        for rank, hit in enumerate(hits, start=1):
            doc_id, first, text = found[hit.corpus_id]
            rows.append([query, rank, doc_id, hit.score, *([first] if retrieved else []), text])
    columns = ["query", "rank", "id", "score", *(["retrieval_score"] if retrieved else []), "text"]
    return columns, rows
