"""The request body and its texts: parse (JSON whatever the Content-Type, gzip bounded), check, render.

Rendering reuses the library's steps: the ``dimensions`` prefix is :func:`sentemb.pooling.truncate_dim`
(re-normalised, as OpenAI's ``dimensions`` promises) and ``embedding_type`` is :func:`sentemb.quantize`.
"""

from __future__ import annotations

import base64
import zlib
from typing import Any, TypeVar

import numpy as np
from pydantic import BaseModel, ValidationError
from starlette.requests import ClientDisconnect, Request

from sentemb.config import LongText
from sentemb.errors import InvalidTextError
from sentemb.pooling import truncate_dim
from sentemb.retrieval.quantize import quantization_ranges, quantize
from sentemb.server import fastjson
from sentemb.server.errors import ApiError, shown, validation_message
from sentemb.server.schemas import EmbeddingRequest
from sentemb.tokenize import TextInfo, check_unicode, lone_surrogate

Model = TypeVar("Model", bound=BaseModel)


def decode_body(raw: bytes, content_encoding: str, limit: int) -> bytes:
    """The body without its Content-Encoding (identity or gzip), refused past ``limit`` bytes unpacked."""
    encoding = content_encoding.strip().lower()
    if encoding in ("", "identity"):
        return raw
    if encoding not in ("gzip", "x-gzip"):
        raise ApiError(
            415,
            f"Content-Encoding '{shown(encoding, 40)}' is not supported; send the body uncompressed or as gzip",
            code="unsupported_media_type",
        )
    unpacker = zlib.decompressobj(16 + zlib.MAX_WBITS)
    try:
        body = unpacker.decompress(raw, limit + 1)
    except zlib.error:
        raise ApiError(400, "the body is not valid gzip (Content-Encoding: gzip)", code="invalid_body") from None
    if len(body) > limit or unpacker.unconsumed_tail:
        raise ApiError(
            413,
            f"the gzip body unpacks to more than this server's limit of {limit} bytes",
            code="request_too_large",
        )
    return body


def parse_request(body: bytes, content_type: str, schema: type[Model] = EmbeddingRequest) -> Model:  # type: ignore[assignment]
    """The request as ``schema``; JSON is accepted with any Content-Type (``curl -d`` sends a form type)."""
    try:
        data = fastjson.loads(body)
    except (ValueError, RecursionError):
        media = content_type.split(";", 1)[0].strip() or "none"
        hint = "" if media == "application/json" else f" (Content-Type: {shown(media, 60)}; send application/json)"
        raise ApiError(400, f"the request body is not valid JSON{hint}", code="invalid_json") from None
    if not isinstance(data, dict):
        raise ApiError(400, "the request body must be a JSON object", code="invalid_value")
    try:
        return schema.model_validate(data)
    except ValidationError as exc:
        message, param = validation_message(exc.errors())
        raise ApiError(400, message, param=param, code="invalid_value") from None


async def read_request(request: Request, schema: type[Model], max_bytes: int) -> Model:
    """The request's body, unpacked (gzip) and parsed as ``schema``; 499 if the client went away."""
    try:
        packed = await request.body()
    except ClientDisconnect:  # gone, or cut off by the read deadline (which answered 408 itself)
        raise ApiError(499, "the client closed the request", code="client_closed_request") from None
    raw = decode_body(packed, request.headers.get("content-encoding", ""), max_bytes)
    return parse_request(raw, request.headers.get("content-type", ""), schema)


def documents_from(value: list[Any], max_inputs: int, param: str = "documents") -> list[str]:
    """A rerank request's documents as strings: each a string or an object with a string 'text'; at least
    one, at most ``max_inputs`` (413, as text-embeddings-inference); a bad one is a 400 naming it."""
    if not value:
        raise ApiError(400, f"'{param}' is an empty array; send at least one document", param=param,
                       code="empty_input")  # fmt: skip
    if len(value) > max_inputs:
        raise ApiError(413, f"'{param}' has {len(value)} items; this server takes at most {max_inputs} per request",
                       param=param, code="too_many_inputs")  # fmt: skip
    texts = []
    for index, item in enumerate(value):
        text = item.get("text") if isinstance(item, dict) else item
        if not isinstance(text, str):
            what = "an object without a string 'text'" if isinstance(item, dict) else _json_type(item)
            raise ApiError(400, f"{param}[{index}] is {what}, not a string", param=param, code="invalid_type")
        texts.append(unicode_text(text, f"{param}[{index}]", param))
    return texts


def unicode_text(text: str, where: str, param: str) -> str:
    """``text``, or a 400 naming ``where`` when it is not valid Unicode (a lone surrogate), before it is queued."""
    position = lone_surrogate(text)
    if position is not None:
        raise ApiError(400, f"{where} is not valid Unicode: character {position} is a lone surrogate, which has "
                       "no UTF-8 form; send the text as valid UTF-8", param=param, code="invalid_text")  # fmt: skip
    return text


def texts_from_input(value: object, max_inputs: int) -> list[str]:
    """The request's ``input`` as a list of non-empty strings, or a 400 that names the problem."""
    if isinstance(value, str):
        items: list[object] = [value]
    elif isinstance(value, list):
        items = value
        if not items:
            raise ApiError(
                400, "'input' is an empty array; send at least one string", param="input", code="empty_input"
            )
        if len(items) > max_inputs:
            raise ApiError(
                400,
                f"'input' has {len(items)} items; this server takes at most {max_inputs} per request",
                param="input",
                code="too_many_inputs",
            )
        if all(isinstance(x, int) and not isinstance(x, bool) for x in items) or any(
            isinstance(x, list) for x in items
        ):
            raise ApiError(
                400,
                "token id arrays are not supported; send the texts as strings (LangChain's OpenAIEmbeddings: "
                "pass check_embedding_ctx_length=False)",
                param="input",
                code="unsupported_input",
            )
    else:
        raise ApiError(400, "'input' must be a string or an array of strings", param="input", code="invalid_type")
    for index, item in enumerate(items):
        if not isinstance(item, str):
            raise ApiError(
                400, f"input[{index}] is {_json_type(item)}, not a string", param="input", code="invalid_type"
            )
        if not item:
            raise ApiError(400, f"input[{index}] is an empty string", param="input", code="empty_input")
    try:  # refused here, before it is queued beside other requests' texts
        check_unicode(items)  # type: ignore[arg-type]
    except InvalidTextError as exc:
        raise invalid_text(exc.index, exc.position) from None
    return items  # type: ignore[return-value]


def invalid_text(index: int, position: int) -> ApiError:
    return ApiError(
        400,
        f"input[{index}] is not valid Unicode: character {position} is a lone surrogate, which has no UTF-8 "
        "form; send the text as valid UTF-8",
        param="input",
        code="invalid_text",
    )


def _json_type(value: object) -> str:
    names = {bool: "a boolean", int: "a number", float: "a number", dict: "an object", list: "an array"}
    return "null" if value is None else names.get(type(value), type(value).__name__)


def refuse_over_max_chars(texts: list[str], max_chars: int | None, long_text: LongText) -> None:
    """With long_text='error', a text over the encoder's ``max_chars`` is a 400 before it is queued
    (other modes: the encoder cuts it and reports it truncated)."""
    if max_chars is None or long_text is not LongText.ERROR:
        return
    for index, text in enumerate(texts):
        if len(text) > max_chars:
            raise ApiError(
                400,
                f"input[{index}] has {len(text)} characters; this server takes at most {max_chars}",
                param="input",
                code="context_length_exceeded",
            )


def check_dimensions(dimensions: int | None, dim: int) -> None:
    if dimensions is not None and not 1 <= dimensions <= dim:
        raise ApiError(
            400, f"'dimensions' must be between 1 and {dim}, got {dimensions}", param="dimensions", code="invalid_value"
        )


def format_vectors(
    vectors: np.ndarray,
    encoding: str,
    dimensions: int | None,
    embedding_type: str = "float",
    range_vectors: np.ndarray | None = None,
) -> list[Any]:
    """Rows as number lists or base64 of their bytes (little-endian float32, or the quantised bytes).

    ``dimensions`` keeps a re-normalised prefix; ``embedding_type`` quantises it, int8/uint8 with ranges
    taken from ``range_vectors`` (the model's vectors of its calibration sentences) cut the same way."""
    vectors = truncate_dim(vectors, dimensions, renormalize=dimensions is not None)
    if embedding_type == "float":
        rows = np.ascontiguousarray(vectors, dtype="<f4")
    else:
        ranges = None
        if embedding_type.endswith("int8"):
            if range_vectors is None:
                raise ApiError(503, "the server has not measured its int8 ranges yet; retry shortly", code="not_ready")
            ranges = quantization_ranges(truncate_dim(range_vectors, dimensions, renormalize=dimensions is not None))
        rows = quantize(vectors, embedding_type, ranges=ranges)
    if encoding == "base64":
        return [base64.b64encode(row.tobytes()).decode("ascii") for row in rows]
    return rows.tolist()


def embedded_tokens(info: list[TextInfo], room: int) -> int:
    """Tokens the model embedded, as ``usage`` reports them: each text's own tokens after truncation
    (at most ``room``, the model's length less its special tokens), all of a chunked text's tokens,
    and no special tokens (OpenAI counts the input's tokens, which have none)."""
    return sum(item.num_tokens if item.chunks > 1 else min(item.num_tokens, room) for item in info)

