"""Texts -> token id sequences with per-text truncation facts.

Works on a ``tokenizers.Tokenizer`` (the Rust tokenizer behind every fast Hugging Face tokenizer)
whose own truncation and padding are switched off once; every call afterwards only reads it, so one
tokenizer serves many threads without "Already borrowed" errors.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

import numpy as np
from tokenizers import Encoding, Tokenizer

from sentemb.config import LongText
from sentemb.errors import InvalidInputError, InvalidTextError, TextTooLongError

# A token never covers less than one character, and long texts are cut at max_length tokens anyway:
# this many characters per token are kept before tokenising in truncate mode (a 1 MB text costs ms).
CHARS_PER_TOKEN_CAP = 64


@dataclass(frozen=True)
class TextInfo:
    """What happened to one input text.

    ``num_tokens`` counts the text's tokens without special tokens (a lower bound when
    ``chars_capped``: only the first ``max_chars``, or in truncate mode ``max_length * 64``,
    characters were tokenised). A text cut at ``max_chars`` is also ``truncated``.
    """

    num_tokens: int
    truncated: bool
    chunks: int = 1
    chars_capped: bool = False


class ModelInput(NamedTuple):
    """One model input: token ids of a text (or of one chunk of it) with special tokens."""

    text_index: int
    ids: np.ndarray
    type_ids: np.ndarray
    weight: int  # content tokens in this window, for the token-weighted mean of chunks


@dataclass(frozen=True)
class TokenizerSpec:
    """The fixed facts a tokenizing step needs."""

    tokenizer: Tokenizer
    max_length: int
    lowercase: bool = False
    max_chars: int | None = None  # texts are cut here before tokenising (refused with long_text="error")

    @property
    def num_special(self) -> int:
        return int(self.tokenizer.num_special_tokens_to_add(False))


def prepare_tokenizer(tokenizer: Tokenizer) -> Tokenizer:
    """A private copy with truncation and padding off (they would mutate it on every call)."""
    copy = Tokenizer.from_str(tokenizer.to_str())
    copy.no_truncation()
    copy.no_padding()
    return copy


def tokenize(
    spec: TokenizerSpec,
    texts: Sequence[str],
    long_text: LongText,
    overlap: int = 0,
    start_index: int = 0,
    *,
    prompt: str = "",
) -> tuple[list[ModelInput], list[TextInfo]]:
    """Tokenise ``texts`` into model inputs; chunk mode may give several per text.

    ``prompt`` is put before each text, as sentence-transformers does; its tokens count in
    ``num_tokens`` and in truncation (in chunk mode it is part of a text's first window only).
    """
    texts, cut = cap_chars(spec, texts, long_text, start_index)
    room = spec.max_length - spec.num_special
    cap = spec.max_length * CHARS_PER_TOKEN_CAP if long_text is LongText.TRUNCATE else None
    prepared = [(prompt + t).lower() if spec.lowercase else prompt + t for t in texts]
    capped = [bool(cap and len(t) > cap) for t in prepared]
    if cap:
        prepared = [t[:cap] for t in prepared]
    # With special tokens straight away (what post_process would add); only texts over max_length
    # are encoded again without them, to be truncated or chunked first. Per text this loop is the
    # part that holds the GIL, so it stays short.
    encodings = _encode_batch(spec.tokenizer)(prepared, add_special_tokens=True)
    special = spec.num_special
    over = [i for i, enc in enumerate(encodings) if len(enc) - special > room]
    without = spec.tokenizer.encode_batch([prepared[i] for i in over], add_special_tokens=False)
    content = dict(zip(over, without, strict=True))

    sequences: list[ModelInput] = []
    infos: list[TextInfo] = []
    for offset, (enc, speed_cap, was_cut) in enumerate(zip(encodings, capped, cut, strict=True)):
        index = start_index + offset
        was_capped = speed_cap or was_cut
        n = len(enc) - special
        if offset not in content:
            sequences.append(_sequence(index, enc, n))
            infos.append(TextInfo(n, was_capped, 1, was_capped))  # a cut text is truncated even if it fits
            continue
        if long_text is LongText.ERROR:
            raise TextTooLongError(
                f"text {index} has {n} tokens, more than max_length={spec.max_length} allows "
                f"({room} plus {special} special tokens); pass long_text='truncate' or 'chunk'",
                index=index,
                num_tokens=n,
            )
        full = content[offset]
        windows = _windows(full, room, overlap) if long_text is LongText.CHUNK else [full]
        if long_text is not LongText.CHUNK:
            full.truncate(room)
        for window in windows:
            sequences.append(_sequence(index, spec.tokenizer.post_process(window), len(window.ids)))
        chunked = long_text is LongText.CHUNK
        infos.append(TextInfo(n, was_cut or not chunked, len(windows), was_capped))
    return sequences, infos


def _encode_batch(tokenizer: Tokenizer) -> Any:
    """The tokenizer's batch encoder without character offsets (``encode_batch_fast``, tokenizers 0.20+:
    1.1x the texts/s; nothing here reads offsets), else ``encode_batch``."""
    return getattr(tokenizer, "encode_batch_fast", tokenizer.encode_batch)


def cap_chars(
    spec: TokenizerSpec, texts: Sequence[str], long_text: LongText, start_index: int = 0
) -> tuple[Sequence[str], list[bool]]:
    """``texts`` cut at ``spec.max_chars`` (and which were cut); with long_text='error' a longer text
    raises :class:`TextTooLongError` (its ``num_tokens`` counted in full, only on this error path)."""
    limit = spec.max_chars
    if limit is None:
        return texts, [False] * len(texts)
    cut = [len(t) > limit for t in texts]
    if not any(cut):
        return texts, cut
    if long_text is LongText.ERROR:
        offset = cut.index(True)
        text = texts[offset]
        raise TextTooLongError(
            f"text {start_index + offset} has {len(text)} characters, more than max_chars={limit}; "
            "pass long_text='truncate' or 'chunk' to cut it there, or a larger max_chars",
            index=start_index + offset,
            num_tokens=len(spec.tokenizer.encode(text, add_special_tokens=False)),
        )
    return [t[:limit] if c else t for t, c in zip(texts, cut, strict=True)], cut


def as_texts(texts: str | Iterable[str]) -> list[str]:
    """Validate input: a str is one text; anything else must be an iterable of str."""
    if isinstance(texts, str):
        return [texts]
    if isinstance(texts, (bytes, bytearray)) or not isinstance(texts, Iterable):
        raise InvalidInputError(
            f"expected a str or a list of str, got {type(texts).__name__}; decode bytes to str first", None
        )
    items = list(texts)
    for index, item in enumerate(items):
        if not isinstance(item, str):
            raise InvalidInputError(
                f"texts[{index}] is {type(item).__name__} ({item!r:.40}), not str; every text must be a str",
                index,
            )
    check_unicode(items)
    return items


def lone_surrogate(text: str) -> int | None:
    """Position of the first character of ``text`` with no UTF-8 form (a lone surrogate such as "\\ud800"),
    or None. The one check the library, the CLI, the server and the batch job make before a text reaches
    the tokenizer, whose own error names neither the text nor a fix."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        return exc.start
    return None


def check_unicode(texts: list[str]) -> None:
    """Raise :class:`InvalidTextError` for the first text that is not valid Unicode (a lone surrogate)."""
    try:
        "".join(texts).encode("utf-8")  # one pass over everything; the search below only on failure
        return
    except UnicodeEncodeError:
        pass
    for index, text in enumerate(texts):
        position = lone_surrogate(text)
        if position is not None:
            raise InvalidTextError(
                f"texts[{index}] is not valid Unicode: character {position} is a lone surrogate "
                f"(U+{ord(text[position]):04X}), which has no UTF-8 form; fix the text's decoding, or replace "
                "such characters first (text.encode('utf-8', 'replace').decode('utf-8'))",
                index,
                position,
            )


def prompt_length(spec: TokenizerSpec, prompt: str) -> int:
    """Leading tokens of every input that belong to ``prompt``, as sentence-transformers counts them
    for ``include_prompt=False``: the prompt tokenised alone with special tokens, less a trailing
    special token (so [CLS] and the prompt's tokens, not [SEP])."""
    if not prompt:
        return 0
    text = prompt.lower() if spec.lowercase else prompt
    ids = spec.tokenizer.encode(text, add_special_tokens=True).ids
    if len(ids) > spec.max_length:  # truncated as every input is: ends with its special tokens again
        content = spec.tokenizer.encode(text, add_special_tokens=False)
        content.truncate(spec.max_length - spec.num_special)
        ids = spec.tokenizer.post_process(content).ids
    special = {i for i, token in spec.tokenizer.get_added_tokens_decoder().items() if token.special}
    return len(ids) - 1 if ids and ids[-1] in special else len(ids)


def as_pairs(pairs: Iterable[Sequence[str]]) -> list[tuple[str, str]]:
    """Validate text pairs: an iterable of (str, str); a bad item raises naming its index."""
    if isinstance(pairs, (str, bytes, bytearray)) or not isinstance(pairs, Iterable):
        raise InvalidInputError(f"expected a list of (query, document) pairs, got {type(pairs).__name__}", None)
    items: list[tuple[str, str]] = []
    for index, pair in enumerate(pairs):
        if isinstance(pair, (str, bytes)) or not isinstance(pair, Sequence) or len(pair) != 2:
            raise InvalidInputError(f"pairs[{index}] is not a (query, document) pair of two texts: {pair!r:.60}", index)
        for side, text in enumerate(pair):
            if not isinstance(text, str):
                kind = type(text).__name__
                message = f"pairs[{index}][{side}] is {kind} ({text!r:.40}), not str; every text must be a str"
                raise InvalidInputError(message, index)
        items.append((pair[0], pair[1]))
    for index, pair in enumerate(items):
        for side, text in enumerate(pair):
            position = lone_surrogate(text)
            if position is not None:
                raise InvalidTextError(
                    f"pairs[{index}][{side}] is not valid Unicode: character {position} is a lone surrogate "
                    f"(U+{ord(text[position]):04X}), which has no UTF-8 form; fix the text's decoding first",
                    index,
                    position,
                )
    return items


def pair_tokenizer(tokenizer: Tokenizer, max_length: int) -> Tokenizer:
    """A private copy that cuts a pair at ``max_length`` tokens as transformers' tokenizers do for a
    cross-encoder (``longest_first``: a token at a time from the longer text), set once."""
    copy = Tokenizer.from_str(tokenizer.to_str())
    copy.no_padding()
    copy.enable_truncation(max_length, strategy="longest_first")
    return copy


def tokenize_pairs(
    spec: TokenizerSpec, truncating: Tokenizer, pairs: Sequence[tuple[str, str]]
) -> tuple[list[ModelInput], list[TextInfo]]:
    """Tokenise text pairs (first segment, separator, second segment, type ids 0 then 1 where the model
    has them); a pair over ``spec.max_length`` is cut by ``truncating`` (:func:`pair_tokenizer`) and reported."""
    firsts, cut_first = cap_chars(spec, [a for a, _ in pairs], LongText.TRUNCATE)
    seconds, cut_second = cap_chars(spec, [b for _, b in pairs], LongText.TRUNCATE)
    prepared = [(a.lower(), b.lower()) if spec.lowercase else (a, b) for a, b in zip(firsts, seconds, strict=True)]
    full = spec.tokenizer.encode_batch(prepared, add_special_tokens=True)
    over = [i for i, enc in enumerate(full) if len(enc) > spec.max_length]
    cut = dict(zip(over, truncating.encode_batch([prepared[i] for i in over]), strict=True))
    special = int(spec.tokenizer.num_special_tokens_to_add(True))
    sequences, infos = [], []
    for index, enc in enumerate(full):
        chars_cut = cut_first[index] or cut_second[index]
        sequences.append(_sequence(index, cut.get(index, enc), len(enc) - special))
        infos.append(TextInfo(len(enc) - special, index in cut or chars_cut, 1, chars_cut))
    return sequences, infos


def _sequence(index: int, enc: Encoding, content_tokens: int) -> ModelInput:
    return ModelInput(index, np.array(enc.ids, dtype=np.int64), np.array(enc.type_ids, dtype=np.int64), content_tokens)


def _windows(enc: Encoding, room: int, overlap: int) -> list[Encoding]:
    """Overlapping windows of ``room`` content tokens covering the whole encoding."""
    stride = min(overlap, room // 2)
    enc.truncate(room, stride=stride)
    return [enc, *enc.overflowing]


@dataclass(frozen=True)
class LoadedTokenizer:
    """A model's tokenizer as sentemb uses it."""

    tokenizer: Tokenizer
    uses_type_ids: bool
    pad_id: int


def load_hf_tokenizer(folder: str, trust_remote_code: bool = False) -> LoadedTokenizer:
    """Load with ``AutoTokenizer`` (as sentence-transformers does) and keep its fast core; without
    transformers (the base install), read ``tokenizer.json`` itself (:func:`load_tokenizer_json`)."""
    from sentemb.extras import installed

    if not installed("transformers"):
        return load_tokenizer_json(folder)
    from transformers import AutoTokenizer

    from sentemb.errors import ModelNotFoundError

    hf = AutoTokenizer.from_pretrained(folder, trust_remote_code=trust_remote_code)
    core = getattr(hf, "backend_tokenizer", None)
    if core is None:
        raise ModelNotFoundError(f"{folder} has no fast tokenizer (tokenizer.json); sentemb needs one")
    return LoadedTokenizer(prepare_tokenizer(core), "token_type_ids" in hf.model_input_names, hf.pad_token_id or 0)


# Model types whose tokenizers feed token_type_ids (transformers' model_input_names).
_TYPE_ID_MODELS = ("bert", "albert", "electra", "xlnet", "funnel", "layoutlm", "mobilebert", "squeezebert")


def load_tokenizer_json(folder: str) -> LoadedTokenizer:
    """A model folder's ``tokenizer.json`` read with the tokenizers library alone (no transformers):
    type ids and the padding id as transformers would take them from the folder's configs."""
    import json
    from pathlib import Path

    from sentemb.errors import ModelNotFoundError

    root = Path(folder)
    if not (root / "tokenizer.json").is_file():
        raise ModelNotFoundError(
            f"{folder} has no tokenizer.json; without transformers sentemb needs one: pip install 'sentemb[torch]'"
        )

    def read(name: str) -> dict:
        try:
            data = json.loads((root / name).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return {}
        return data if isinstance(data, dict) else {}

    core = Tokenizer.from_file(str(root / "tokenizer.json"))
    tok_config = read("tokenizer_config.json")
    names = tok_config.get("model_input_names")
    model_type = str(read("config.json").get("model_type", ""))
    uses_type_ids = "token_type_ids" in names if isinstance(names, list) else model_type in _TYPE_ID_MODELS
    pad = tok_config.get("pad_token") or read("special_tokens_map.json").get("pad_token")
    if isinstance(pad, dict):
        pad = pad.get("content")
    pad_id = core.token_to_id(pad) if isinstance(pad, str) else None
    return LoadedTokenizer(prepare_tokenizer(core), uses_type_ids, pad_id or 0)
