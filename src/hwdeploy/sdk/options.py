"""Checking a plugin's options: raise :class:`hwdeploy.OptionError` for what the plugin does not accept.

A plugin must reject a user's bad option with ``OptionError``: hwdeploy passes typed errors through to the
caller, while any other exception from a hook marks the plugin broken.
"""

from __future__ import annotations

from typing import Any, Collection, Mapping

from hwdeploy.errors import OptionError


def check_options(owner: str, options: Mapping[str, Any], known: Collection[str]) -> None:
    """Raise :class:`OptionError` if ``options`` has a key outside ``known``, naming both sets.

    ``owner`` starts the message: ``"cpu backend"``, ``"onnx conversion"``.
    """
    unknown = set(options) - set(known)
    if unknown:
        raise OptionError(f"{owner}: unknown option(s) {sorted(unknown)}; known: {sorted(known)}")


def check_threads(threads: Any) -> None:
    """Raise :class:`OptionError` unless ``threads`` is None (the backend's default) or an int >= 1."""
    if threads is not None and (not isinstance(threads, int) or isinstance(threads, bool) or threads < 1):
        raise OptionError(f"threads must be a positive integer, got {threads!r}")
