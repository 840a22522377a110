"""The package's error types, so a caller (the HTTP service, the CLI) can answer each kind as it deserves.

The rule, checked by ``tests/test_errors.py`` over every ``raise`` in the package: an error the package raises on
purpose is one of these (or a subclass defined beside its use, such as ``data.images.ImageLoadError``); the bare
built-ins ``ValueError``, ``RuntimeError``, ``ImportError``, ``KeyError``, ``OSError`` and ``Exception`` are never
raised. What is wrong with the caller's arguments or data is :class:`BadInput` (a name that is not registered,
:class:`UnknownName`), with a weights file :class:`BadWeights`, with the installation :class:`MissingExtra`; work
that could not be done for another reason is :class:`JobFailed` or a subclass of it. ``TypeError`` (an argument of
the wrong Python type) and ``NotImplementedError`` keep their usual meaning.

Each subclasses the built-in exception that earlier versions raised (``ValueError``, ``ImportError``,
``RuntimeError``, ``OSError``), so code catching those still works. Messages name Python arguments; the CLI adds
its flag names.
"""

from __future__ import annotations


class ResnetsError(Exception):
    """Base of every error this package raises on purpose."""


class BadInput(ResnetsError, ValueError):
    """The caller's data or arguments are wrong: an image, a shape, a parameter value (HTTP 422)."""


class UnknownName(BadInput):
    """A name that is not registered: a model, weights, a class, a precision or backend (HTTP 422)."""


class BadWeights(ResnetsError, ValueError):
    """A weights file that cannot be used: damaged, of another network, holding NaN (HTTP 500 in a service
    whose operator chose it)."""


class MissingExtra(ResnetsError, ImportError):
    """An optional dependency is not installed; the message names the extra to install (HTTP 501)."""


class JobFailed(ResnetsError, RuntimeError):
    """Work that could not be done for a reason outside the caller's arguments: a server that did not start, an
    engine that lost results, a damaged installation (HTTP 500)."""


class ExportMismatch(JobFailed):
    """An exported file whose outputs differ from eager PyTorch by more than the tolerance (it is removed)."""


class DiskFull(ResnetsError, OSError):
    """A file could not be written for lack of space (or quota) on its disk; the message names the file, and the
    previous version of it is kept. Built as ``DiskFull(errno.ENOSPC, message, filename)``."""

    def __str__(self) -> str:  # the message alone, not OSError's "[Errno 28] message: 'filename'"
        return str(self.strerror)
