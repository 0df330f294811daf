"""``sentemb search``: top-k corpus rows for each query, from a corpus of texts or saved embeddings."""

from __future__ import annotations

import functools
import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click
import numpy as np

from sentemb.cli.common import EXIT_CODES_HELP, InputError, UsageError, encoder_options, load_encoder
from sentemb.cli.encode import CHUNK_ROWS
from sentemb.cli.fastpath import fastest_cached
from sentemb.cli.io import ERROR_POLICIES, Source, make_source, read_blocks, texts_from
from sentemb.cli.output import print_rows, table_format
from sentemb.cli.sparse import check_sparse_search, hybrid_options, sparse_options

if TYPE_CHECKING:
    from sentemb.encoder import Encoder
    from sentemb.similarity import Hit

EXAMPLES = """\b
Examples:
  sentemb search "how do I reset my password?" --corpus faq.txt -k 3
  sentemb search --queries questions.txt --corpus docs.jsonl --id-field doc_id --format jsonl
  sentemb encode docs.jsonl -o docs.parquet && sentemb search "refunds" --embeddings docs.parquet
  sentemb search "refunds" --embeddings docs.npy --corpus docs.jsonl   # texts shown beside hits
  sentemb index build docs.parquet -o docs.index --output-type binary && sentemb search "refunds" --index docs.index
  sentemb search "refunds" --corpus docs.jsonl --sparse-model ./splade              # sparse (SPLADE) alone
  sentemb search "refunds" --corpus docs.jsonl --sparse-model ./splade --hybrid --fusion weighted

\b
--embeddings takes a file written by `sentemb encode` (.npy, .parquet or .jsonl) made with the
same model options (a .parquet records them, and a mismatch is refused). --index takes a folder
written by `sentemb index build`; queries are embedded with the index's model (another is refused,
exit 3) and --corpus, when given, shows the texts of the hit ids. Results: a table on a
terminal, JSON lines when piped. Without --backend, a cached exact fp32 ONNX/OpenVINO export of
the model is used when there is one (same vectors, faster start).

"""


@click.command(epilog=EXAMPLES + EXIT_CODES_HELP)
@click.argument("queries", nargs=-1)
@click.option("--queries", "queries_file", default=None, help="Queries from a file (- for stdin).")
@click.option("--corpus", "-c", default=None, help="Corpus texts (.txt, .jsonl, .csv, .tsv, .parquet).")
@click.option("--embeddings", "-e", default=None, help="Saved corpus vectors (.npy, .parquet, .jsonl).")
@click.option("--index", "-i", "index_path", default=None, metavar="INDEX",
              help="A saved index (`sentemb index build`) to search instead of --embeddings.")
@click.option("--rescore-multiplier", type=click.IntRange(min=1), default=None,
              help="With --index: candidates per hit before rescoring [default: the index's].")
@click.option("--field", "--column", "field", default="text", show_default=True, help="Field or column with the text.")
@click.option("--id-field", default=None, help="Corpus field or column to report as the id.")
@click.option("--top-k", "-k", type=click.IntRange(min=1), default=10, show_default=True, help="Hits per query.")
@click.option("--score", type=click.Choice(["cosine", "dot", "euclidean", "manhattan"]), default=None,
              help="How to score [default: the model's similarity function, cosine unless it names another].")
@click.option("--query-prompt-name", default=None, help="Prompt for the queries [default: the model's 'query'].")
@click.option("--query-prompt", default=None, help="A prompt text for the queries (instead of --query-prompt-name).")
@click.option("--corpus-prompt-name", default=None,
              help="Prompt for the corpus [default: the model's 'document', else 'passage', else 'corpus'].")
@click.option("--corpus-prompt", default=None, help="A prompt text for the corpus (instead of --corpus-prompt-name).")
@click.option("--errors", type=click.Choice(ERROR_POLICIES), default="strict", show_default=True,
              help="Invalid UTF-8 or a row without text: stop, replace bad bytes, or skip the row.")
@click.option("--format", "fmt", type=click.Choice(["table", "tsv", "jsonl"]), default=None,
              help="Output style [default: table on a terminal, jsonl when piped].")
@click.option("--rerank", "rerank_model", default=None, metavar="MODEL",
              help="Rerank each query's candidates with this cross-encoder (needs --corpus for the texts).")
@click.option("--rerank-candidates", type=click.IntRange(min=1), default=50, show_default=True,
              help="With --rerank: candidates retrieved per query, of which the best -k are kept.")
@hybrid_options
@sparse_options
@encoder_options
def search(
    *,
    queries: tuple[str, ...], queries_file: str | None, corpus: str | None, embeddings: str | None,
    index_path: str | None, rescore_multiplier: int | None, field: str, id_field: str | None, top_k: int,
    score: str | None, errors: str, fmt: str | None, query_prompt_name: str | None,
    query_prompt: str | None, corpus_prompt_name: str | None, corpus_prompt: str | None, rerank_model: str | None,
    rerank_candidates: int, sparse_model: str | None, max_active_dims: int | None, sparse_embeddings: str | None,
    hybrid: bool, fusion: str, sparse_weight: float, **encoder_params: Any,
) -> None:
    """Find the corpus rows closest to each query (then, with --rerank, rerank them with a cross-encoder)."""
    if bool(queries) == bool(queries_file):
        raise UsageError("give QUERIES or --queries FILE (one of them)")
    if rerank_model is not None and corpus is None:
        raise UsageError("--rerank scores the candidates' texts: give --corpus FILE")
    check_sparse_search(sparse_model, index_path=index_path, embeddings=embeddings, score=score,
                        sparse_embeddings=sparse_embeddings, hybrid=hybrid, params=encoder_params)  # fmt: skip
    if index_path is not None and (embeddings is not None or score is not None):
        raise UsageError("--index searches the index's own vectors with its own score: drop --embeddings/--score")
    if corpus is None and embeddings is None and index_path is None and sparse_embeddings is None:
        raise UsageError("give --corpus FILE, --embeddings FILE, both, or --index INDEX")
    query_texts = texts_from(queries_file, queries, field=field, errors=errors, what="QUERY")
    if not query_texts:
        raise InputError("no queries left to search (every one was skipped)")
    retrieved_k = max(top_k, rerank_candidates) if rerank_model is not None else top_k
    if index_path is not None:
        from sentemb.cli.corpus import retrieval_errors

        with retrieval_errors():
            found = search_index(index_path, query_texts, top_k=retrieved_k, rescore_multiplier=rescore_multiplier,
                                 corpus=corpus, texts_options={"field": field, "id_field": id_field, "errors": errors},
                                 prompts=(query_prompt_name, query_prompt), encoder_params=encoder_params)  # fmt: skip
        _print(query_texts, found, top_k, fmt, rerank_model=rerank_model, params=encoder_params)
        return
    corpus_source = None
    if corpus is not None:
        corpus_source = make_source(corpus, input_format=None, field=field, id_field=id_field, errors=errors)
    dense = functools.partial(dense_hits, query_texts, corpus_source, embeddings, score,
                              prompts=(query_prompt_name, query_prompt, corpus_prompt_name, corpus_prompt),
                              keep_corpus_ids=id_field is not None, params=encoder_params)  # fmt: skip
    method = None
    if sparse_model is not None:
        from sentemb.cli.sparse_search import SparseSearch

        sides = SparseSearch(sparse_model, max_active_dims, sparse_embeddings, fusion if hybrid else None,
                             sparse_weight, prompts=(query_prompt_name, query_prompt, corpus_prompt_name,
                                                     corpus_prompt))  # fmt: skip
        found, method = sides.run(query_texts, corpus_source, retrieved_k, dense=dense, params=encoder_params)
    else:
        ids, texts, hits = dense(retrieved_k)
        found = [[(ids[hit.corpus_id], hit.score, texts[hit.corpus_id] if texts else None) for hit in row]
                 for row in hits]  # fmt: skip
    _print(query_texts, found, top_k, fmt, rerank_model=rerank_model, params=encoder_params, method=method)


def dense_hits(
    query_texts: list[str], corpus_source: Source | None, embeddings: str | None, score: str | None,
    top_k: int, *, prompts: tuple[str | None, ...], keep_corpus_ids: bool, params: dict[str, Any],
) -> tuple[list[Any], list[str], list[list[Hit]]]:  # fmt: skip
    """The dense model's top-k corpus rows per query: (corpus ids, corpus texts or [], hits)."""
    saved, facts = load_embeddings(embeddings) if embeddings is not None else (None, None)
    encoder = load_encoder(**fastest_cached(params))
    if facts is not None:
        from sentemb.cli.vectors import check_facts

        check_facts(facts, encoder, str(embeddings))
    query_prompt = encoder.resolve_prompt(prompt_name=prompts[0] or encoder_task("query", encoder), prompt=prompts[1])
    corpus_prompt = encoder.resolve_prompt(prompt_name=prompts[2] or encoder_task("document", encoder),
                                           prompt=prompts[3])  # fmt: skip
    ids, texts, vectors = _corpus(encoder, saved, corpus_source, corpus_prompt, keep_corpus_ids=keep_corpus_ids)
    if vectors.shape[1] != encoder.dim:
        raise InputError(f"{embeddings}: vectors have {vectors.shape[1]} numbers but the model makes {encoder.dim}; "
                         "search with the model that wrote them")

    import sentemb

    score = score or encoder.similarity_fn_name
    hits = sentemb.semantic_search(encoder.encode(query_texts, prompt=query_prompt), vectors, top_k, score=score)
    return ids, texts, hits


Found = list[list[tuple[Any, float, "str | None"]]]  # per query: (id, score, text or None) of each hit


def _print(
    queries: list[str], found: Found, top_k: int, fmt: str | None, *, rerank_model: str | None,
    params: dict[str, Any], method: str | None = None,
) -> None:  # fmt: skip
    """The hits as rows (query, rank, id, score[, text][, method]); with ``rerank_model``, reranked by that
    cross-encoder (the retrieval score beside its own), the best ``top_k``; ``method`` names how the hits
    were found when it is not the dense model alone (sparse, or a hybrid's fusion)."""
    if rerank_model is not None:
        from sentemb.cli.common import load_reranker
        from sentemb.cli.rerank import reranked_rows
        from sentemb.rerank import EMBEDDING_OPTIONS

        runtime = {k: v for k, v in params.items() if k not in EMBEDDING_OPTIONS and k != "model_arg"}
        reranker = load_reranker(**{**runtime, "model": rerank_model})
        candidates: list[list[tuple[Any, float | None, str]]] = [[(i, s, t or "") for i, s, t in row] for row in found]
        columns, rows = reranked_rows(reranker, queries, candidates, top_k)
    else:
        with_text = any(t is not None for row in found for _, _, t in row)
        rows = [[query, rank, i, s, *([t] if with_text else [])]
                for query, row in zip(queries, found, strict=True) for rank, (i, s, t) in enumerate(row, start=1)]
        columns = ["query", "rank", "id", "score"] + (["text"] if with_text else [])
    if method is not None:
        columns, rows = [*columns, "method"], [[*row, method] for row in rows]
    title = f"top {top_k}" + (f" ({method})" if method else "")
    print_rows(columns, rows, table_format(fmt, piped="jsonl"), title=title)


def _corpus(
    encoder: Encoder, saved: tuple[list[Any], np.ndarray] | None, source: Source | None, prompt: str,
    *, keep_corpus_ids: bool,
) -> tuple[list[Any], list[str], np.ndarray]:  # fmt: skip
    """Ids, texts (empty without --corpus) and vectors: saved ones, or the corpus embedded now."""
    ids: list[Any] = []
    texts: list[str] = []
    vectors = np.zeros((0, encoder.dim), dtype=np.float32)
    if saved is not None:
        ids, vectors = saved
    if source is not None:
        corpus_ids, texts, parts = read_corpus(source, encoder if saved is None else None, prompt)
        if saved is None:
            ids, vectors = corpus_ids, np.concatenate(parts)
        elif len(texts) != len(vectors):
            raise InputError(f"--corpus has {len(texts):,} texts but --embeddings has {len(vectors):,} vectors")
        elif keep_corpus_ids:
            ids = corpus_ids
    return ids, texts, vectors


def search_index(
    index_path: str, query_texts: list[str], *, top_k: int, rescore_multiplier: int | None, corpus: str | None,
    texts_options: dict[str, Any], prompts: tuple[str | None, str | None], encoder_params: dict[str, Any],
) -> Found:  # fmt: skip
    """Queries against a saved :class:`sentemb.Index`; with ``corpus``, the texts of the hit ids beside them."""
    import sentemb

    index = sentemb.Index.load(index_path)
    if encoder_params.get("model") is None and index.model.get("model"):
        encoder_params["model"] = index.model["model"]  # queries default to the index's own model
    encoder = load_encoder(**fastest_cached(encoder_params))
    index.check_model(encoder)  # refuse another model before spending time on the corpus
    by_id: dict[Any, str] = {}
    if corpus is not None:
        source = make_source(corpus, input_format=None, **texts_options)
        corpus_ids, texts, _ = read_corpus(source, None)
        by_id = dict(zip(corpus_ids, texts, strict=True))
    prompt = encoder.resolve_prompt(prompt_name=prompts[0] or encoder_task("query", encoder), prompt=prompts[1])
    hits = index.search(encoder.encode(query_texts, prompt=prompt), top_k, model=encoder,
                        rescore_multiplier=rescore_multiplier)  # fmt: skip
    return [[(hit.id, hit.score, by_id.get(hit.id, "") if by_id else None) for hit in row] for row in hits]


def encoder_task(task: str, encoder: Encoder) -> str | None:
    """The prompt name encode_query ("query") or encode_document ("document") would use."""
    from sentemb.prompts import DOCUMENT, QUERY, task_prompt_name

    return task_prompt_name(encoder.prompts, QUERY if task == "query" else DOCUMENT)


def read_corpus(
    source: Source, encoder: Encoder | None, prompt: str = ""
) -> tuple[list[Any], list[str], list[np.ndarray]]:
    """Ids, texts and (when ``encoder`` is given) vectors, chunk by chunk, of a corpus file."""
    ids: list[Any] = []
    texts: list[str] = []
    parts = []
    for chunk in read_blocks(source, CHUNK_ROWS):
        ids += chunk.ids
        texts += chunk.texts
        if encoder is not None and chunk.texts:
            parts.append(encoder.encode(chunk.texts, prompt=prompt))
    if not texts:
        raise InputError(f"{source.label}: no texts in the corpus")
    return ids, texts, parts


def load_embeddings(path: str) -> tuple[tuple[list[Any], np.ndarray], dict[str, Any] | None]:
    """((ids, float32 vectors), the facts of the model that made them if the file records them)."""
    if not Path(path).is_file():
        raise InputError(f"{path}: no such file")
    suffix = Path(path).suffix.lower()
    try:
        if suffix == ".npy":
            vectors = np.load(path, mmap_mode="r", allow_pickle=False)
            if vectors.ndim != 2:
                raise InputError(f"{path}: expected a 2-D array of vectors, got shape {vectors.shape}")
            return (list(range(len(vectors))), np.asarray(vectors, dtype=np.float32)), None
        if suffix in (".parquet", ".pq"):
            return _parquet_embeddings(path)
        if suffix in (".jsonl", ".ndjson"):
            return _jsonl_embeddings(path), None
    except ValueError as exc:
        raise InputError(f"{path}: not a readable embedding file ({exc})") from None
    raise InputError(f"{path}: saved embeddings must be .npy, .parquet or .jsonl")


def _parquet_embeddings(path: str) -> tuple[tuple[list[Any], np.ndarray], dict[str, Any] | None]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    from sentemb.cli.vectors import read_facts

    try:
        table = pq.read_table(path)
    except (pa.ArrowException, OSError) as exc:
        raise InputError(f"{path}: not a readable parquet file ({exc})") from None
    if "embedding" not in table.column_names:
        raise InputError(f"{path}: no 'embedding' column (columns: {', '.join(table.column_names)})")
    column = table.column("embedding").combine_chunks()
    dim = getattr(column.type, "list_size", None)
    if dim is None:
        vectors = np.array(column.to_pylist(), dtype=np.float32)
    else:
        vectors = column.flatten().to_numpy(zero_copy_only=False).astype(np.float32).reshape(-1, dim)
    ids = table.column("id").to_pylist() if "id" in table.column_names else list(range(len(vectors)))
    return (ids, vectors), read_facts(table.schema.metadata)


def _jsonl_embeddings(path: str) -> tuple[list[Any], np.ndarray]:
    ids: list[Any] = []
    rows: list[list[float]] = []
    with open(path, encoding="utf-8") as handle:
        for number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
                rows.append(record["embedding"])
            except (json.JSONDecodeError, KeyError, TypeError):
                raise InputError(f"{path}: line {number} is not an object with an 'embedding'") from None
            ids.append(record.get("id", len(ids)))
    if not rows:
        raise InputError(f"{path}: no embeddings in the file")
    return ids, np.array(rows, dtype=np.float32)
