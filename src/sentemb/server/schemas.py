"""OpenAI-shaped request and response bodies: pydantic lives here, at the HTTP boundary only."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictInt

INPUT_TYPE_HELP = (
    "'query' or 'document' (Cohere's 'search_query' / 'search_document' too): encode as the library's "
    "encode_query / encode_document do: the task's prompt unless prompt_name is given, and for an inference-free "
    "sparse model the Router's query or document route. The model's default when left out."
)


class EmbeddingRequest(BaseModel):
    """``POST /v1/embeddings``. ``input`` is checked by :func:`sentemb.server.inputs.texts_from_input`
    so that a wrong item gets a message naming its index."""

    model_config = ConfigDict(extra="ignore")

    input: Any = Field(description="A string or an array of strings (token id arrays are refused).")
    model: str | None = Field(default=None, description="A served model name; the service's model when left out.")
    encoding_format: Literal["float", "base64"] = "float"
    dimensions: StrictInt | None = Field(default=None, description="Keep the first N numbers, then re-normalise.")
    prompt_name: str | None = Field(
        default=None,
        description="One of the model's prompts to put before every input (e.g. 'query'); the server's default "
        "prompt when left out. The openai client sends it with extra_body.",
    )
    embedding_type: Literal["float", "int8", "uint8", "binary", "ubinary"] = Field(
        default="float",
        description="The output type of each vector (not the model's compute precision): float, or quantised "
        "as sentence-transformers' quantize_embeddings does: int8/uint8 scaled by ranges the server measured on "
        "its calibration sentences, binary/ubinary one bit per dimension packed 8 per byte.",
    )
    user: str | None = None
    input_type: str | None = Field(default=None, description=INPUT_TYPE_HELP)


class Embedding(BaseModel):
    object: Literal["embedding"] = "embedding"
    embedding: list[float] | list[int] | str
    index: int


class Usage(BaseModel):
    prompt_tokens: int
    total_tokens: int


class EmbeddingResponse(BaseModel):
    object: Literal["list"] = "list"
    data: list[Embedding]
    model: str
    usage: Usage


class ModelCard(BaseModel):
    id: str
    object: Literal["model"] = "model"
    created: int
    owned_by: str = "sentemb"
    kind: Literal["embedding", "rerank", "sparse"] = "embedding"
    max_input_tokens: int | None = Field(default=None, description="Tokens per input (a text, or a pair).")
    max_inputs: int | None = Field(default=None, description="Inputs (texts, or documents) per request.")


class RerankRequest(BaseModel):
    """``POST /v1/rerank`` and ``/v2/rerank``, as Cohere and Jina define them."""

    model_config = ConfigDict(extra="ignore")

    query: str
    documents: list[Any] = Field(description="Strings, or objects with a 'text' field.")
    model: str | None = Field(default=None, description="A served reranker's name; the first one when left out.")
    top_n: StrictInt | None = Field(default=None, description="Return the best N (all when left out).")
    return_documents: bool = False


class RerankResult(BaseModel):
    index: int
    relevance_score: float
    document: dict[str, str] | None = None


class RerankResponse(BaseModel):
    id: str
    model: str
    results: list[RerankResult]
    usage: Usage
    meta: dict[str, Any]


class TeiRerankRequest(BaseModel):
    """``POST /rerank`` as Hugging Face text-embeddings-inference defines it."""

    model_config = ConfigDict(extra="ignore")

    query: str
    texts: list[Any]
    raw_scores: bool = False
    return_text: bool = False
    truncate: bool = Field(default=False, description="Cut pairs over the model's length (else 413).")
    model: str | None = None


class TokenizeRequest(BaseModel):
    """``POST /tokenize`` as text-embeddings-inference defines it, with an optional served model name."""

    model_config = ConfigDict(extra="ignore")

    inputs: str | list[Any]
    add_special_tokens: bool = True
    model: str | None = None


class EmbedSparseRequest(BaseModel):
    """``POST /embed_sparse`` as text-embeddings-inference defines it, with an optional served model name."""

    model_config = ConfigDict(extra="ignore")

    inputs: str | list[Any]
    truncate: bool = Field(default=False, description="Cut inputs over the model's length (else 413).")
    prompt_name: str | None = None
    input_type: str | None = Field(default=None, description="A sentemb extension (TEI has no such field): "
                                   + INPUT_TYPE_HELP)
    model: str | None = Field(default=None, description="A served sparse model's name; the first one when left out.")


class ModelList(BaseModel):
    object: Literal["list"] = "list"
    data: list[ModelCard]


class ErrorDetail(BaseModel):
    message: str
    type: str
    param: str | None = None
    code: str | None = None


class ErrorBody(BaseModel):
    error: ErrorDetail
