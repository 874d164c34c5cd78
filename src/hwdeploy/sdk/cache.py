"""hwdeploy's on-disk cache: zoo models, converted artifacts, optimized programs, probes."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, Callable


def cache_dir(*parts: str) -> Path:
    """``$HWDEPLOY_CACHE_DIR`` (or ``$XDG_CACHE_HOME/hwdeploy``, ``~/.cache/hwdeploy``), joined with ``parts``."""
    root = os.environ.get("HWDEPLOY_CACHE_DIR")
    if root:
        base = Path(root)
    else:
        base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "hwdeploy"
    path = base.joinpath(*parts)
    path.mkdir(parents=True, exist_ok=True)
    return path


def cache_key(*items: Any) -> str:
    """A short stable hash of JSON-able items (dict keys sorted)."""
    blob = json.dumps(items, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:24]


def build_once(final: Path, build: Callable[[Path], Any]) -> tuple[Path, bool]:
    """Return ``final``, building it with ``build(tmpdir)`` first if it does not exist.

    The directory is built under a temporary name and renamed into place, so a
    crash mid-build never leaves a half-written entry that a later run trusts,
    and two processes racing both end up with one complete copy.
    Returns ``(final, built_now)``.
    """
    if final.is_dir():
        return final, False
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.", dir=final.parent))
    try:
        build(tmp)
        try:
            os.rename(tmp, final)
        except OSError:
            if not final.is_dir():
                raise
            shutil.rmtree(tmp, ignore_errors=True)  # another process won the race
            return final, False
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return final, True
