"""The static model's vocabulary and tokenizer, made from a transformer's tokenizer as model2vec's
``distill`` makes them (with skeletoken), so that both libraries tokenise a text into the same rows.

From the model's ``tokenizer.json``: the tokens matching ``remove`` (``[unusedN]``) and the added
tokens other than the unknown and padding tokens ([CLS], [SEP], [MASK], ...) leave the vocabulary,
the rest keep their order under new consecutive ids; words of an extra vocabulary are normalised
and pre-tokenised as the tokenizer would, then added (one piece: a new token; several: an added
token that matches the whole phrase); the post-processor goes (static models add no special tokens).
Each token is embedded as the model reads it alone: its original id between the special tokens the
post-processor puts first and last, or, for a new word, the ids the model's tokenizer gives it with
the padding and truncation its ``tokenizer.json`` sets (model2vec encodes new words that way: with
all-MiniLM-L6-v2's fixed padding to 128 it attends to the padding tokens too; kept for the same rows).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from sentemb.errors import ConfigError
from sentemb.models.static import M2V_MAX_LENGTH

# model2vec's default: BERT's placeholder tokens carry no meaning.
REMOVE_PATTERN = r"\[unused\d+\]"
_VOCAB_MODELS = ("WordPiece", "WordLevel", "BPE")


@dataclass(frozen=True)
class Vocabulary:
    """The static model's tokens in row order, the ids that embed each one, and its tokenizer."""

    tokens: list[str]
    inputs: list[list[int]]  # token ids (of the original tokenizer, special tokens included) per row
    tokenizer_json: str


def build_vocabulary(
    tokenizer: Any,
    unk: str | None,
    pad: str | None,
    remove: str | None,
    *,
    words: Iterable[str] = (),
    as_saved: Any = None,
) -> Vocabulary:
    """The distilled vocabulary of ``tokenizer`` (a ``tokenizers.Tokenizer`` with its post-processor);
    ``as_saved`` is the same tokenizer with the padding and truncation of its file, for new words."""
    data = json.loads(tokenizer.to_str())
    model = data["model"]
    if model["type"] not in (*_VOCAB_MODELS, "Unigram"):
        raise ConfigError(f"sentemb distils models whose tokenizer is WordPiece, BPE, WordLevel or Unigram, "
                          f"not {model['type']}")  # fmt: skip
    original = _vocab(model)
    pattern = re.compile(remove) if remove else None
    keep = {unk, pad} - {None}
    added = {item["content"] for item in data.get("added_tokens", [])} - keep
    ordered = sorted(original, key=original.__getitem__)
    kept = [t for t in ordered if t not in added and not (pattern and pattern.match(t))]
    singles, phrases = _new_words(tokenizer, set(original), pattern, words)
    if (singles or phrases) and model["type"] not in ("WordPiece", "WordLevel"):
        raise ConfigError(f"--vocabulary needs a WordPiece or WordLevel tokenizer; this model's is {model['type']}")
    tokens = [*kept, *singles, *phrases]
    if not tokens:
        raise ConfigError("the vocabulary is empty once the removal pattern has been applied; loosen it")
    bos, eos = _special_ids(data.get("post_processor"), original)
    reader = as_saved or tokenizer
    inputs = [
        [*bos, original[t], *eos] if t in original else reader.encode(t, add_special_tokens=True).ids
        for t in tokens
    ]
    return Vocabulary(tokens, inputs, _static_tokenizer_json(data, tokens, keep, phrases, unk))


def _vocab(model: dict) -> dict[str, int]:
    if model["type"] == "Unigram":
        return {piece: index for index, (piece, _) in enumerate(model["vocab"])}
    return dict(model["vocab"])


def _new_words(
    tokenizer: Any, known: set[str], pattern: re.Pattern[str] | None, words: Iterable[str]
) -> tuple[list[str], list[str]]:
    """Extra vocabulary as model2vec adds it: (new single tokens, new multi-piece phrases)."""
    singles: list[str] = []
    phrases: list[str] = []
    seen, seen_phrases = set(known), set()
    normalizer, pre_tokenizer = tokenizer.normalizer, tokenizer.pre_tokenizer
    for word in words:
        text = normalizer.normalize_str(word) if normalizer is not None else word
        if not text:
            continue
        pieces = [piece for piece, _ in pre_tokenizer.pre_tokenize_str(text)] if pre_tokenizer else [text]
        if not pieces:
            continue
        if len(pieces) > 1:
            phrase = text.strip()
            if phrase not in seen_phrases:
                seen_phrases.add(phrase)
                phrases.append(phrase)
            continue
        token = pieces[0]
        if token in seen or (pattern and pattern.match(token)):
            continue
        seen.add(token)
        singles.append(token)
    return singles, phrases


def _special_ids(post_processor: dict | None, vocab: dict[str, int]) -> tuple[list[int], list[int]]:
    """The ids the post-processor puts before and after a single text (skeletoken's bos / eos)."""
    if not post_processor:
        return [], []
    kind = post_processor.get("type")
    if kind in ("BertProcessing", "RobertaProcessing"):
        return [int(post_processor["cls"][1])], [int(post_processor["sep"][1])]
    if kind != "TemplateProcessing":
        return [], []  # a Sequence or ByteLevel: skeletoken finds none there either
    single = post_processor.get("single") or []
    specials = post_processor.get("special_tokens") or {}

    def tokens_of(item: dict) -> list[int]:
        if "SpecialToken" not in item:
            return []
        info = specials.get(item["SpecialToken"]["id"])
        return [vocab[t] for t in info["tokens"]] if info else []

    return (tokens_of(single[0]), tokens_of(single[-1])) if single else ([], [])


def _static_tokenizer_json(
    data: dict, tokens: list[str], keep: set[str | None], phrases: list[str], unk: str | None
) -> str:
    """``tokenizer.json`` for the static model: the kept tokens renumbered in order, no post-processor,
    no padding, truncation at model2vec's default 512 tokens (as the folders model2vec writes)."""
    out = dict(data)
    model = dict(data["model"])
    ids = {token: index for index, token in enumerate(tokens)}
    if model["type"] == "Unigram":
        scores = dict((piece, score) for piece, score in data["model"]["vocab"])
        model["vocab"] = [[t, scores.get(t, 0.0)] for t in tokens]
        if model.get("unk_id") is not None:
            unk_piece = data["model"]["vocab"][model["unk_id"]][0]
            model["unk_id"] = ids.get(unk_piece)
    else:
        model["vocab"] = ids
        if "unk_token" in model and model["unk_token"] is None and unk is not None:
            model["unk_token"] = unk  # skeletoken sets the transformers tokenizer's unk_token on the model
    if model.get("type") == "BPE" and model.get("merges"):
        merges = model["merges"]
        pairs = [m if isinstance(m, list) else m.split(" ") for m in merges]
        model["merges"] = [m for m, p in zip(merges, pairs, strict=True) if all(x in ids for x in p)]
    out["model"] = model
    added = [dict(item, id=ids[item["content"]]) for item in data.get("added_tokens", []) if item["content"] in keep]
    added += [{"id": ids[p], "content": p, "single_word": False, "lstrip": False, "rstrip": False,
               "normalized": True, "special": False} for p in phrases]  # fmt: skip
    out["added_tokens"] = added
    out["post_processor"] = None
    out["padding"] = None
    out["truncation"] = {"direction": "Right", "max_length": M2V_MAX_LENGTH, "strategy": "LongestFirst", "stride": 0}
    _prefix_space(out.get("pre_tokenizer"))
    return json.dumps(out, ensure_ascii=False)


def _prefix_space(pre_tokenizer: dict | None) -> None:
    """model2vec makes a byte-level tokenizer add a prefix space, so a text's first word is read as
    every other word (the rows were made that way)."""
    if not pre_tokenizer:
        return
    if pre_tokenizer.get("type") == "ByteLevel":
        pre_tokenizer["add_prefix_space"] = True
    for inner in pre_tokenizer.get("pretokenizers") or []:
        _prefix_space(inner)
