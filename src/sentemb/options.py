"""How a configuration field describes its command-line flag: declared once, beside the field.

The library's frozen dataclasses (:class:`~sentemb.config.EncoderConfig`,
:class:`~sentemb.server.ServerSettings`, :class:`~sentemb.batch.BatchJob`) carry their help text in
field metadata; :mod:`sentemb.cli.flags` turns every field that has a ``help`` into a click option
(the library itself never imports click)::

    max_length: int | None = option(None, help="Tokens per text [default: the model's].", min=4)
    # the same, without the helper:
    max_length: int | None = field(default=None, metadata={"help": "Tokens per text [default: the model's]."})

Metadata keys (only ``help`` is required; a field without it is not a flag):

``help``     the flag's help text; say the default in it when the default is ``None``
``flag``     the long flag when it is not ``--field-name`` (e.g. ``--batch-tokens``)
``short``    a one-letter alias such as ``-m``
``metavar``  the value's placeholder in ``--help``
``env``      an environment variable that gives the value when the flag is absent
``choices``  the allowed strings of a ``str`` field (an enum field lists its members by itself)
``min``/``max``  bounds of a number, checked by the command line before the dataclass sees it
``above``        a lower bound the number must exceed (``--max-queue-seconds 0`` is refused by the flag)

The type decides the rest: an enum is a choice of its values; ``bool`` with default ``False`` is an
on-switch (``--allow-pickle``), any other ``bool`` or ``bool | None`` gets ``--x/--no-x``; a
``tuple[str, ...]`` is a repeatable flag; a field without a default is a positional argument. A flag
that is not given leaves the dataclass's own default in place, so defaults live only in the dataclass.
"""

from __future__ import annotations

import dataclasses
from typing import Any

KEYS = frozenset({"help", "flag", "short", "metavar", "env", "choices", "min", "max", "above"})


def option(default: Any = dataclasses.MISSING, *, help: str, **flag: Any) -> Any:
    """A dataclass field whose metadata describes its command-line flag (keys: see the module doc)."""
    unknown = set(flag) - KEYS
    if unknown:
        raise TypeError(f"unknown option metadata {sorted(unknown)}; use {sorted(KEYS)}")
    metadata = {"help": help, **flag}
    if default is dataclasses.MISSING:
        return dataclasses.field(metadata=metadata)
    return dataclasses.field(default=default, metadata=metadata)
