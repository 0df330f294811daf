"""Checks on texts before they reach the encoder: the file's encoding, lone surrogates, --errors policies.

A text with a lone surrogate (a JSON ``"\\ud800"`` escape, or bytes that are not UTF-8 in a command
line argument, which Python passes on as surrogates) has no UTF-8 form; the tokenizer would fail on
the whole batch. Here it is a bad record like any other: named, replaced or skipped per ``--errors``.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import IO

from sentemb.cli.common import InputError
from sentemb.tokenize import lone_surrogate

_SURROGATES = re.compile("[\ud800-\udfff]")

# Byte order marks of encodings other than UTF-8 (UTF-32 first: its LE mark starts like UTF-16's).
_BOMS = ((b"\xff\xfe\x00\x00", "UTF-32-LE"), (b"\x00\x00\xfe\xff", "UTF-32-BE"), (b"\xff\xfe", "UTF-16-LE"),
         (b"\xfe\xff", "UTF-16-BE"))


def check_encoding(handle: IO[bytes], label: str) -> None:
    """Refuse a UTF-16/32 file (named by its byte order mark): read as UTF-8 it would be garbage."""
    peek = getattr(handle, "peek", None)
    head = peek(4)[:4] if peek is not None else b""
    for bom, name in _BOMS:
        if head.startswith(bom):
            raise InputError(
                f"{label}: the file is {name} (it starts with a {name} byte order mark) and sentemb reads "
                f"UTF-8; convert it first, e.g. iconv -f {name} -t UTF-8 {label} > converted.txt"
            )


def _replace_surrogates(text: str) -> str:
    """U+FFFD for each undecodable byte (surrogateescape) or other lone surrogate."""
    try:
        return text.encode("utf-8", "surrogateescape").decode("utf-8", "replace")
    except UnicodeEncodeError:
        return _SURROGATES.sub("\ufffd", text)


def bad_unicode(text: str, where: str, source_label: str, errors: str) -> str | None:
    """``text`` if valid; None (skip) or the text with U+FFFD for a lone surrogate; raises under strict."""
    position = lone_surrogate(text)
    if position is None:
        return text
    if errors == "skip":
        return None
    if errors == "replace":
        return _replace_surrogates(text)
    raise InputError(
        f"{source_label}: {where}: character {position + 1} is a lone surrogate (U+{ord(text[position]):04X}), "
        "which is not valid Unicode; fix the input, or use --errors replace or --errors skip"
    )


def check_inline(texts: Iterable[str], what: str, errors: str) -> list[tuple[int, str]]:
    """(position, text) of the texts given as arguments, checked like file records.

    Bytes that are not UTF-8 in an argument arrive as lone surrogates (Python's surrogateescape).
    """
    kept = []
    for index, text in enumerate(texts):
        position = lone_surrogate(text)
        if position is not None:
            if errors == "skip":
                continue
            if errors == "strict":
                raise InputError(
                    f"{what} number {index + 1} is not valid UTF-8 (character {position + 1}); fix its encoding, "
                    "or use --errors replace or --errors skip"
                )
            kept.append((index, _replace_surrogates(text)))
            continue
        kept.append((index, text))
    return kept
