"""Click options generated from the library's frozen dataclasses, one per field that has a ``help``.

The conventions (metadata keys, how a type becomes a flag) are described in :mod:`sentemb.options`.
A flag that is not given is ``None`` in the callback and :func:`build` leaves the field out, so the
dataclass's own default applies: no default is written twice.
"""

from __future__ import annotations

import dataclasses
import enum
import functools
import types
import typing
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import click

F = TypeVar("F", bound=Callable[..., Any])
T = TypeVar("T")


@dataclass(frozen=True)
class Flag:
    """One field's command-line parameter: the callback's keyword ``param`` fills ``field``."""

    param: str
    field: str
    decorator: Callable[[Any], Any]


def _unwrap(kind: Any) -> tuple[Any, bool]:
    """(the type without ``| None``, whether it is a tuple)."""
    if typing.get_origin(kind) in (typing.Union, types.UnionType):
        kind = next(arg for arg in typing.get_args(kind) if arg is not type(None))
    if typing.get_origin(kind) is tuple:
        return typing.get_args(kind)[0], True
    return kind, False


def _click_type(kind: Any, meta: typing.Mapping[str, Any]) -> Any:
    if isinstance(kind, type) and issubclass(kind, enum.Enum):
        return click.Choice([str(member.value) for member in kind], case_sensitive=False)
    if "choices" in meta:
        return click.Choice(list(meta["choices"]), case_sensitive=False)
    bounded = "min" in meta or "max" in meta
    if kind is int:
        return click.IntRange(meta.get("min"), meta.get("max")) if bounded else click.INT
    if kind is float and "above" in meta:
        return click.FloatRange(meta["above"], meta.get("max"), min_open=True)
    if kind is float:
        return click.FloatRange(meta.get("min"), meta.get("max")) if bounded else click.FLOAT
    return click.STRING


def _help(text: str, default: object) -> str:
    """The help text with the dataclass's default (a ``None`` default is explained by the text itself)."""
    if default is None or default == () or default is False:
        return text
    shown = default.value if isinstance(default, enum.Enum) else default
    return f"{text}  [default: {shown}]"


def _flag(field: dataclasses.Field, kind: Any) -> Flag:
    meta = field.metadata
    long = meta.get("flag") or "--" + field.name.replace("_", "-")
    param = long.lstrip("-").replace("-", "_")
    if field.default is dataclasses.MISSING and field.default_factory is dataclasses.MISSING:
        return Flag(param, field.name, click.argument(param, metavar=meta.get("metavar")))
    kind, repeated = _unwrap(kind)
    names = [long, *([meta["short"]] if "short" in meta else [])]
    shown = field.default
    if kind is bool and field.default is not None:
        shown = long if field.default else "--no-" + long[2:]
    common: dict[str, Any] = {"help": _help(meta["help"], shown), "default": None, "envvar": meta.get("env")}
    common["show_envvar"] = "env" in meta
    if kind is bool and field.default is False:
        option = click.option(*names, param, is_flag=True, **common)
    elif kind is bool:
        option = click.option(f"{long}/--no-{long[2:]}", param, **common)
    else:
        option = click.option(
            *names, param, type=_click_type(kind, meta), multiple=repeated, metavar=meta.get("metavar"), **common
        )
    return Flag(param, field.name, option)


@functools.cache
def flags_of(cls: type) -> tuple[Flag, ...]:
    """The flags of ``cls``'s fields that have a ``help``, in field order."""
    hints = typing.get_type_hints(cls)
    return tuple(_flag(f, hints[f.name]) for f in dataclasses.fields(cls) if "help" in f.metadata)


def add_flags(cls: type, skip: tuple[str, ...] = ()) -> Callable[[F], F]:
    """Decorator: add ``cls``'s flags, but those of the ``skip`` fields, to a click command (in field
    order in ``--help``)."""

    def decorate(func: F) -> F:
        for flag in reversed(flags_of(cls)):
            if flag.field not in skip:
                func = flag.decorator(func)
        return func

    return decorate


def params_of(cls: type, skip: tuple[str, ...] = ()) -> tuple[str, ...]:
    """The callback keywords that :func:`add_flags` adds for ``cls``."""
    return tuple(flag.param for flag in flags_of(cls) if flag.field not in skip)


def build(cls: type[T], params: dict[str, Any], **fixed: Any) -> T:
    """``cls`` from a callback's keywords (all of ``cls``'s, no others); flags not given keep the default."""
    kind: type = cls
    unknown = set(params) - set(params_of(kind))
    if unknown:
        raise TypeError(f"{sorted(unknown)} are not flags of {kind.__name__}")
    values = {}
    for flag in flags_of(kind):
        value = params.get(flag.param)
        if value is not None and value != ():
            values[flag.field] = value
    return cls(**values, **fixed)
