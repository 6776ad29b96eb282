"""Code fingerprints: a digest of the user's code that a stage runs.

A stage's output depends on its code as much as on its parameters, so a batch
key must change when the code does. ``code_digest(cls)`` hashes the source of
the stage class (and its user-code base classes) and, followed transitively,
of every function, class and module-level value of the user's own code that
it names. Installed packages, the standard library and Winnow itself are not
followed: upgrading them is not an edit of the pipeline.

The source is hashed as a syntax tree with docstrings removed, so comments,
docstrings and formatting do not count, and neither do the file's path or the
module's name: moving or renaming a pipeline file reuses its work. Where no
source exists (a class typed into a REPL), the compiled code is hashed instead.
"""

from __future__ import annotations

import ast
import functools
import hashlib
import inspect
import os
import sys
import sysconfig
import textwrap
import types
from typing import Any

_SIMPLE = (int, float, complex, str, bytes, bool, type(None))


def code_digest(obj: type | types.FunctionType, without: frozenset[str] = frozenset()) -> str:
    """SHA-256 over the normalized source of a class or function and the user code it uses.

    For a class, its base classes of user code count too. ``without`` names
    methods of the class (and those bases) left out, with what only they use:
    a grouping stage's map side does not run its reduce.
    """
    return _cached_digest(obj, without)


@functools.lru_cache(maxsize=512)
def _cached_digest(obj: Any, without: frozenset[str]) -> str:
    walker = _Walker()
    for item in obj.__mro__ if isinstance(obj, type) else (obj,):
        if is_user_code(item) or item is obj:
            walker.add(item, without)
    text = "\n".join(f"{label}\n{body}" for label, body in sorted(walker.parts))
    return hashlib.sha256(text.encode()).hexdigest()


@functools.cache
def _library_roots() -> tuple[str, ...]:
    paths = sysconfig.get_paths()
    roots = {paths[k] for k in ("stdlib", "platstdlib", "purelib", "platlib") if k in paths}
    roots |= {p for p in sys.path if p.rstrip(os.sep).endswith(("site-packages", "dist-packages"))}
    return tuple(os.path.realpath(r) + os.sep for r in roots if r)


def is_user_code(obj: Any) -> bool:
    """Whether ``obj`` (a module, class or function) is the project's own code.

    Not installed packages, not the standard library, not Winnow itself.
    """
    module = obj if isinstance(obj, types.ModuleType) else sys.modules.get(_module_name(obj))
    if module is None:
        return False
    name = module.__name__
    if name == "winnow" or name.startswith("winnow."):
        return False
    if name in sys.builtin_module_names:
        return False
    path = getattr(module, "__file__", None)
    if path is None:
        return name == "__main__"  # a REPL or notebook: the user's own
    real = os.path.realpath(path)
    return not real.startswith(_library_roots())


def _module_name(obj: Any) -> str:
    return str(getattr(obj, "__module__", "") or "")


class _Walker:
    """Collects the normalized source of each piece of user code reached."""

    def __init__(self) -> None:
        # (label, normalized source): labels are qualified names without the
        # module, which may be renamed freely.
        self.parts: list[tuple[str, str]] = []
        self._seen: set[str] = set()

    def add(self, obj: Any, without: frozenset[str] = frozenset()) -> None:
        """Hash a user function or class (less the methods ``without``); follow the names used."""
        key = f"{_module_name(obj)}:{getattr(obj, '__qualname__', repr(obj))}"
        if key in self._seen:
            return
        self._seen.add(key)
        label = str(getattr(obj, "__qualname__", "?"))
        tree = _source_tree(obj)
        if tree is not None and without:
            tree = _without_methods(tree, without)
        if tree is None:
            self.parts.append((label, _bytecode_text(obj)))
            return
        self.parts.append((label, _dump(tree)))
        module = sys.modules.get(_module_name(obj))
        scope = _closure_scope(obj)
        for name, attrs in _names_used(tree):
            self._resolve(name, attrs, module, scope)

    def _resolve(
        self, name: str, attrs: list[str], module: Any, scope: dict[str, Any], depth: int = 0
    ) -> None:
        closure = name in scope
        if closure:
            value = scope[name]
        elif module is not None and name in vars(module):
            value = vars(module)[name]
        else:
            return  # a builtin, or a local name
        if isinstance(value, types.ModuleType):
            if is_user_code(value) and attrs and depth < 8:
                self._resolve(attrs[0], attrs[1:], value, {}, depth + 1)
        elif isinstance(value, (type, types.FunctionType)) and is_user_code(value):
            self.add(value)
        elif closure:
            self.parts.append((f"<closure>.{name}", _value_text(value)))
        elif is_user_code(module):
            self._module_binding(module, name)  # a constant, or which package it came from

    def _module_binding(self, module: Any, name: str) -> None:
        """The module-level statements that bind ``name`` (a constant, an import)."""
        key = f"{module.__name__}:<global>.{name}"
        if key in self._seen:
            return
        self._seen.add(key)
        statements = _module_statements(module).get(name)
        if not statements:
            value = vars(module).get(name)
            if isinstance(value, _SIMPLE):
                self.parts.append((f"<global>.{name}", repr(value)))
            return
        self.parts.append((f"<global>.{name}", "\n".join(_dump(s) for s in statements)))
        for stmt in statements:
            if isinstance(stmt, (ast.Import, ast.ImportFrom)):
                continue
            for used, attrs in _names_used(stmt):
                if used != name:
                    self._resolve(used, attrs, module, {})


def _without_methods(tree: ast.AST, names: frozenset[str]) -> ast.AST:
    """A copy of a class's tree without the methods ``names``."""
    tree = _copy(tree)
    for node in ast.walk(tree):
        if isinstance(node, ast.ClassDef):
            kept = [
                item
                for item in node.body
                if not (
                    isinstance(item, (ast.FunctionDef, ast.AsyncFunctionDef)) and item.name in names
                )
            ]
            node.body = kept or [ast.Pass()]
    return tree


def _value_text(value: Any) -> str:
    if isinstance(value, (type, types.FunctionType)):
        return f"{value.__module__}.{value.__qualname__}"  # a library's, by name
    text = repr(value)
    return type(value).__qualname__ if " at 0x" in text else text  # no memory addresses


def _source_tree(obj: Any) -> ast.AST | None:
    try:
        source = inspect.getsource(obj)
    except (OSError, TypeError):
        return None
    try:
        return ast.parse(textwrap.dedent(source))
    except SyntaxError:
        return None


def _dump(node: ast.AST) -> str:
    return ast.dump(_strip_docstrings(node), annotate_fields=False, include_attributes=False)


def _strip_docstrings(node: ast.AST) -> ast.AST:
    """A copy of ``node`` without docstrings: they document, they do not compute."""
    node = _copy(node)
    for item in ast.walk(node):
        body = getattr(item, "body", None)
        if (
            isinstance(item, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef))
            and isinstance(body, list)
            and body
            and isinstance(body[0], ast.Expr)
            and isinstance(body[0].value, ast.Constant)
            and isinstance(body[0].value.value, str)
        ):
            item.body = body[1:] or [ast.Pass()]
    return node


def _copy(node: ast.AST) -> ast.AST:
    return ast.parse(ast.unparse(node)) if not isinstance(node, ast.Module) else node


def _names_used(tree: ast.AST) -> list[tuple[str, list[str]]]:
    """Each name read in ``tree``, and each attribute chain read off a name (``a.b.c``)."""
    used: list[tuple[str, list[str]]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Name) and isinstance(node.ctx, ast.Load):
            used.append((node.id, []))
        elif isinstance(node, ast.Attribute):
            attrs: list[str] = []
            cur: ast.AST = node
            while isinstance(cur, ast.Attribute):
                attrs.append(cur.attr)
                cur = cur.value
            if isinstance(cur, ast.Name):
                used.append((cur.id, list(reversed(attrs))))
    return used


def _closure_scope(obj: Any) -> dict[str, Any]:
    """Values captured by the closures of ``obj``'s functions (a class defined in a function)."""
    functions = [obj] if isinstance(obj, types.FunctionType) else []
    if isinstance(obj, type):
        for value in vars(obj).values():
            func = value.fget if isinstance(value, property) else getattr(value, "__func__", value)
            # Methods written in the class, not ones generated for it (a dataclass's
            # __init__ is compiled from a string and closes over Winnow's internals).
            if isinstance(func, types.FunctionType) and not func.__code__.co_filename.startswith(
                "<"
            ):
                functions.append(func)
    scope: dict[str, Any] = {}
    for func in functions:
        for name, cell in zip(func.__code__.co_freevars, func.__closure__ or (), strict=False):
            try:
                scope[name] = cell.cell_contents
            except ValueError:
                continue  # an empty cell
    scope.pop("__class__", None)
    return scope


def _bytecode_text(obj: Any) -> str:
    """A stable text of the compiled code of ``obj``, for code without source."""
    codes: list[types.CodeType] = []
    if isinstance(obj, types.FunctionType):
        codes.append(obj.__code__)
    elif isinstance(obj, type):
        for _, value in sorted(vars(obj).items()):
            func = getattr(value, "__func__", value)
            if isinstance(func, types.FunctionType):
                codes.append(func.__code__)
    return "\n".join(_code_text(c) for c in codes)


def _code_text(code: types.CodeType) -> str:
    consts = [_code_text(c) if isinstance(c, types.CodeType) else repr(c) for c in code.co_consts]
    return f"{code.co_name}|{code.co_code.hex()}|{consts}|{code.co_names}|{code.co_varnames}"


@functools.lru_cache(maxsize=64)
def _module_statements_cached(name: str, source: str) -> dict[str, list[ast.stmt]]:
    index: dict[str, list[ast.stmt]] = {}
    for stmt in ast.parse(source).body:
        for bound in _bound_names(stmt):
            index.setdefault(bound, []).append(stmt)
    return index


def _module_statements(module: Any) -> dict[str, list[ast.stmt]]:
    """Top-level statements of ``module`` by the name they bind or change."""
    try:
        source = inspect.getsource(module)
    except (OSError, TypeError):
        return {}
    return _module_statements_cached(module.__name__, source)


def _bound_names(stmt: ast.stmt) -> list[str]:
    if isinstance(stmt, (ast.Import, ast.ImportFrom)):
        return [(a.asname or a.name).split(".")[0] for a in stmt.names]
    targets: list[ast.AST] = []
    if isinstance(stmt, ast.Assign):
        targets = list(stmt.targets)
    elif isinstance(stmt, (ast.AugAssign, ast.AnnAssign)):
        targets = [stmt.target]
    names = []
    for target in targets:
        for node in ast.walk(target):
            if isinstance(node, ast.Name):
                names.append(node.id)
    return names
