"""Optional dependencies: whether one is installed, importing one with an error that names its extra,
and the order in which native extensions must be loaded into one process.

Native extensions can break each other at import time. usearch's compiled module (2.26.3 and later)
links its own copy of libstdc++ and exports its symbols; onnxruntime loaded after it crashes the
process in its static initialisers (SIGSEGV in ``std::codecvt<char16_t>::do_unshift``). The other
order is safe. :func:`require` is the one place sentemb imports such an extension, and it loads the
ones that must come first (``LOAD_FIRST``) before it; ``tests/test_native_imports.py`` imports every
pair of the extras' native modules in both orders in subprocesses.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
from collections.abc import Callable
from typing import Any

# module -> the installed modules imported before it, so that no process of sentemb's can crash on the
# order it happens to import them in.
LOAD_FIRST: dict[str, tuple[str, ...]] = {"usearch": ("onnxruntime",)}


def installed(module: str) -> bool:
    """Whether ``module`` can be imported, without importing it (a blocked or broken one counts as absent)."""
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        return False


def torch_installed() -> bool:
    """Whether the torch extra (torch and transformers) is installed."""
    return installed("torch") and installed("transformers")


def openvino_runs(int8: bool, find: Callable[[str], bool] = installed) -> bool:
    """Whether OpenVINO is installed (``find``: module -> bool), and NNCF too where int8 needs it to quantise."""
    return find("openvino") and (not int8 or find("nncf"))


def load_native(module: str) -> Any:
    """``importlib.import_module(module)``, with the extensions that must be loaded before it loaded first."""
    top = module.split(".", maxsplit=1)[0]
    if top not in sys.modules:
        for first in LOAD_FIRST.get(top, ()):
            if installed(first):
                importlib.import_module(first)
    return importlib.import_module(module)


def require(module: str, extra: str, purpose: str) -> Any:
    """Import an optional dependency, or raise ImportError that names the extra installing it."""
    try:
        return load_native(module)
    except ImportError:
        raise ImportError(f"{purpose} needs {module}: pip install 'sentemb[{extra}]'") from None
