"""The package's one rule for errors (see resnets/errors.py), checked over every ``raise`` in its source: no bare
ValueError, RuntimeError, ImportError, KeyError, OSError or Exception; every class raised is one of the package's
types (or a subclass defined beside its use), or a built-in that keeps its usual meaning."""

from __future__ import annotations

import argparse
import ast
import builtins
import importlib
import inspect
from pathlib import Path

import pytest

import resnets
from resnets.errors import BadInput, ResnetsError, UnknownName

SRC = Path(resnets.__file__).parent
FORBIDDEN = {"ValueError", "RuntimeError", "ImportError", "ModuleNotFoundError", "KeyError", "LookupError",
             "IndexError", "OSError", "IOError", "Exception", "BaseException"}
# Built-ins (and argparse's) that keep their usual meaning: a wrong Python type, a missing attribute, an abstract
# method, the end of an iteration, a path that is not there or not readable, argparse's own channel for a bad
# flag value.
ALLOWED = (TypeError, AttributeError, NotImplementedError, StopIteration, StopAsyncIteration, KeyboardInterrupt,
           SystemExit, FileNotFoundError, FileExistsError, IsADirectoryError, NotADirectoryError, PermissionError,
           argparse.ArgumentTypeError)
# Signals a framework defines for itself to catch: starlette answers ClientDisconnect by dropping the request.
FRAMEWORK = {"starlette.requests.ClientDisconnect"}


def _raised(tree: ast.AST) -> list[tuple[int, ast.expr]]:
    """(line, the expression naming the class) of every ``raise X(...)`` or ``raise X``."""
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Raise) and node.exc is not None:
            exc = node.exc.func if isinstance(node.exc, ast.Call) else node.exc
            found.append((node.lineno, exc))
    return found


def _module_name(path: Path) -> str:
    parts = path.relative_to(SRC.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _resolve(module, exc: ast.expr):
    """The object an ``ast.Name``/``ast.Attribute`` names in ``module`` (None for a local variable: ``raise e``)."""
    if isinstance(exc, ast.Name):
        return getattr(module, exc.id, getattr(builtins, exc.id, None))
    if isinstance(exc, ast.Attribute) and isinstance(exc.value, ast.Name):
        owner = getattr(module, exc.value.id, None)
        return getattr(owner, exc.attr, None)
    return None


def test_every_raise_follows_the_rule() -> None:
    bad = []
    files = sorted(SRC.rglob("*.py"))
    assert len(files) > 50
    for path in files:
        tree = ast.parse(path.read_text(), str(path))
        raises = _raised(tree)
        if not raises:
            continue
        where = path.relative_to(SRC)
        forbidden = [(line, exc.id) for line, exc in raises if isinstance(exc, ast.Name) and exc.id in FORBIDDEN]
        bad += [f"{where}:{line}: raise {name}" for line, name in forbidden]
        try:
            module = importlib.import_module(_module_name(path))
        except ImportError as e:  # an optional extra that is not installed: the names alone were checked
            pytest.skip(f"{where}: {e}")
        for line, exc in raises:
            cls = _resolve(module, exc)
            if not inspect.isclass(cls) or (isinstance(exc, ast.Name) and exc.id in FORBIDDEN):
                continue  # a variable (raise e), or already reported
            if cls.__name__.startswith("_") and cls.__module__ == module.__name__:
                continue  # a module's private signal to itself (caught there), never seen by a caller
            if f"{cls.__module__}.{cls.__qualname__}" in FRAMEWORK:
                continue
            if not (issubclass(cls, ResnetsError) or issubclass(cls, ALLOWED)):
                bad.append(f"{where}:{line}: raise {cls.__module__}.{cls.__qualname__}, not one of resnets.errors'")
    assert not bad, "raises outside the rule of resnets/errors.py:\n" + "\n".join(bad)


def test_the_same_mistake_is_the_same_type_everywhere() -> None:
    """A bad precision or backend is UnknownName whichever entry point it reaches (it was ValueError in one place,
    UnknownName in another)."""
    from resnets.inference.table import backend, precision
    from resnets.pipeline import load_inference

    model = resnets.create_model("resnet20")
    for call in (lambda: precision("fp8"), lambda: backend("tensorrt"),
                 lambda: load_inference("resnet20", None, precision="fp8"),
                 lambda: resnets.optimize(model, "fp8"), lambda: resnets.optimize(model, "fp32", backend="tensorrt"),
                 lambda: resnets.create_model("resnet21"), lambda: resnets.create_model("resnet20", weights="nope")):
        with pytest.raises(UnknownName):
            call()
    for call in (lambda: resnets.create_model("resnet20", drop_rate=2.0),
                 lambda: resnets.ResNet50(weights=None, pooling="median")):
        with pytest.raises(BadInput):
            call()
