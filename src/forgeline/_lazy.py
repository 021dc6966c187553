"""Lazy package exports (PEP 562): a package's public names, imported on first use.

So that importing an options model (``forgeline.train.config``) or parsing a DAG file does
not import torch, Ray or DeepSpeed through a package's ``__init__``.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any


def lazy_exports(package: str, exports: dict[str, str]) -> Callable[[str], Any]:
    """A module ``__getattr__`` that imports ``name`` from ``{package}.{exports[name]}``."""

    def __getattr__(name: str) -> Any:
        if name in exports:
            return getattr(importlib.import_module(f"{package}.{exports[name]}"), name)
        raise AttributeError(f"module {package!r} has no attribute {name!r}")

    return __getattr__
