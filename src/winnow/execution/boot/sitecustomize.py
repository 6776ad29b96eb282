"""Started before ``import ray`` in every process of an embedded Ray: defers a slow import.

With Jupyter installed (the ``notebook`` extra), ``jsonschema`` finds the
``rfc3987_syntax`` package and imports it, and that import compiles a Lark
grammar: about 1 s of CPU in every process that imports Ray (Ray's
runtime-env schemas import ``jsonschema``), when nothing Winnow runs ever
validates an IRI. ``install`` puts a stand-in for ``rfc3987_syntax`` in
``sys.modules`` whose functions import the real package on first use, so
behaviour is unchanged and only processes that validate an IRI pay for it.

This folder holds only this file. The embedded Ray's processes get it on
their ``PYTHONPATH`` (``winnow.execution.embedded``), so Python runs it at
start-up as ``sitecustomize``; it then runs the environment's own
``sitecustomize``, if there is one. The driver loads it by path and calls
``install`` itself. It imports nothing of Winnow: a Ray helper process
that never imports Winnow must not pay for it.
"""

from __future__ import annotations

import importlib
import importlib.util
import os
import sys
import types
from typing import Any

LAZY = "rfc3987_syntax"


class _Deferred(types.ModuleType):
    """A stand-in module: the real one is imported when a name of it is first used."""

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__"):
            raise AttributeError(name)
        real = _load()
        return getattr(real, name)


def _load() -> types.ModuleType:
    """The real module: imported on the first call, the same one after."""
    loaded = sys.modules.get(LAZY)
    if loaded is not None and not isinstance(loaded, _Deferred):
        return loaded
    stand_in = sys.modules.pop(LAZY, None)
    try:
        return importlib.import_module(LAZY)
    except BaseException:
        if stand_in is not None:
            sys.modules[LAZY] = stand_in
        raise


def _deferred_call(name: str) -> Any:
    def call(*args: Any, **kwargs: Any) -> Any:
        return getattr(_load(), name)(*args, **kwargs)

    call.__name__ = name
    return call


def install() -> bool:
    """Put the stand-in in place, unless the package is absent or already imported."""
    if LAZY in sys.modules or importlib.util.find_spec(LAZY) is None:
        return False
    module = _Deferred(LAZY)
    # jsonschema does `from rfc3987_syntax import is_valid_syntax`: a deferred
    # function, so that import binds a name without loading the grammar.
    module.is_valid_syntax = _deferred_call("is_valid_syntax")  # type: ignore[attr-defined]
    sys.modules[LAZY] = module
    return True


def _chain() -> None:
    """Run the ``sitecustomize`` this one hides on ``sys.path``, if any."""
    here = os.path.dirname(os.path.abspath(__file__))
    me = sys.modules.pop("sitecustomize", None)
    saved = list(sys.path)
    sys.path[:] = [p for p in sys.path if os.path.abspath(p or ".") != here]
    try:
        importlib.import_module("sitecustomize")
    except ImportError:
        if me is not None:
            sys.modules["sitecustomize"] = me
    finally:
        sys.path[:] = saved


if __name__ == "sitecustomize":
    install()
    _chain()
