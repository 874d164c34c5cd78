"""hwdeploy's on-disk cache: zoo models, converted artifacts, simulated-device builds, probes.

Every entry published by :func:`build_once` carries a manifest (``.hwdeploy-manifest.json``: each file's size
and sha256, written before the entry is renamed into place). :func:`build_once` verifies an existing entry
before trusting it; a damaged one (a flipped byte, a truncated or deleted file) is moved away, logged and
built again, never served and never a permanent error.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import tempfile
import threading
from pathlib import Path
from typing import Any, Callable, Literal

log = logging.getLogger("hwdeploy")

MANIFEST = ".hwdeploy-manifest.json"
#: "hash": sizes and sha256 of every file (once per process per entry); "size": sizes only, for large trees
#: that a runtime may legitimately add files to (a venv writes __pycache__; only the listed files are checked).
Verify = Literal["hash", "size"]


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


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def write_manifest(directory: Path, verify: Verify = "hash") -> None:
    """Record every file under ``directory`` (size, and sha256 unless ``verify="size"``)."""
    files = {}
    for path in sorted(p for p in directory.rglob("*") if p.is_file() and not p.is_symlink()):
        name = path.relative_to(directory).as_posix()
        if name == MANIFEST:
            continue
        files[name] = {"size": path.stat().st_size}
        if verify == "hash":
            files[name]["sha256"] = file_sha256(path)
    (directory / MANIFEST).write_text(json.dumps({"version": 1, "verify": verify, "files": files}, indent=0))


_verified: set[tuple[str, float]] = set()  # (entry, manifest mtime) hashed clean in this process
_verified_lock = threading.Lock()


def entry_problem(directory: Path) -> str | None:
    """Why the published entry ``directory`` cannot be trusted, or None when its files match its manifest."""
    manifest_path = directory / MANIFEST
    try:
        manifest = json.loads(manifest_path.read_text())
        files = manifest["files"]
        stamp = (str(directory), manifest_path.stat().st_mtime)
    except (OSError, ValueError, KeyError, TypeError) as exc:
        return f"no readable manifest ({type(exc).__name__})"
    with _verified_lock:
        if stamp in _verified:
            return None
    for name, facts in files.items():
        path = directory / name
        try:
            size = path.stat().st_size
        except OSError:
            return f"{name} is missing"
        if size != facts.get("size"):
            return f"{name} is {size} bytes, {facts.get('size')} when published"
    for name, facts in files.items():
        if "sha256" in facts and file_sha256(directory / name) != facts["sha256"]:
            return f"{name} changed since it was published (sha256 mismatch)"
    with _verified_lock:
        _verified.add(stamp)
    return None


def discard_entry(final: Path, why: str) -> None:
    """Move a damaged entry out of the way (atomically: readers never see half of it) and delete it."""
    log.warning("hwdeploy cache: %s is damaged (%s); building it again", final, why)
    trash = final.with_name(f".{final.name}.damaged.{os.getpid()}.{threading.get_ident()}")
    try:
        os.rename(final, trash)
    except OSError:
        return  # another process moved it first
    shutil.rmtree(trash, ignore_errors=True)


def build_once(final: Path, build: Callable[[Path], Any], verify: Verify = "hash") -> tuple[Path, bool]:
    """Return ``final``, building it with ``build(tmpdir)`` first if it is absent or damaged.

    The directory is built under a temporary name, its manifest written, and renamed into place, so a crash
    mid-build never leaves a half-written entry that a later run trusts, and processes racing end up with one
    complete copy. Returns ``(final, built_now)``.
    """
    if final.is_dir():
        problem = entry_problem(final)
        if problem is None:
            return final, False
        discard_entry(final, problem)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.", dir=final.parent))
    try:
        build(tmp)
        write_manifest(tmp, verify)
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


def write_verified_file(path: Path, text: str) -> None:
    """Publish a one-file entry (a probe result, a decision) atomically, with its sha256 beside it."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
    tmp.write_text(json.dumps({"sha256": hashlib.sha256(text.encode()).hexdigest(), "text": text}))
    if path.is_dir() and not path.is_symlink():  # a damaged entry that became a directory: os.replace cannot
        _remove(path)
    os.replace(tmp, path)


def read_verified_file(path: Path) -> str | None:
    """The text :func:`write_verified_file` wrote, or None when absent or damaged (a damaged file is removed)."""
    try:
        data = json.loads(path.read_text())
        text = data["text"]
        if hashlib.sha256(text.encode()).hexdigest() == data["sha256"]:
            return text
        why = "sha256 mismatch"
    except FileNotFoundError:
        return None
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
        why = type(exc).__name__
    log.warning("hwdeploy cache: %s is damaged (%s); ignoring it", path, why)
    _remove(path)
    return None


def _remove(path: Path) -> None:
    """Remove a damaged entry, whatever it became (a file, a directory, a link)."""
    try:
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink()
    except OSError:
        pass
