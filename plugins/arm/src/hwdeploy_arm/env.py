"""The Paddle Lite environment: a CPython <= 3.10 with ``paddlelite`` that the worker runs under.

PyPI's ``paddlelite`` wheels exist only for CPython 3.7-3.10, so Lite never runs inside the
(3.11+) host process. The interpreter is, in this order:

1. ``$HWDEPLOY_LITE_PYTHON`` (any interpreter that can ``import paddlelite.lite``);
2. the environment :func:`setup_lite_env` made in hwdeploy's cache
   (``$HWDEPLOY_CACHE_DIR/lite-env/...``; ``hwdeploy lite-setup`` on the command line);
3. a CPython 3.7-3.10 that already has ``paddlelite`` installed (pyenv versions, ``python3.X`` on PATH).

The base interpreter :func:`setup_lite_env` builds the venv from is searched under ``$PYENV_ROOT``,
then ``~/.pyenv``, then each ``python3.10`` on PATH, and every candidate is *run* before it is chosen
(a pyenv shim for a version that is not pyenv's global one exits 127): see :func:`search_base_python`.

Nothing here imports Paddle or Lite; probes run in subprocesses.
"""

from __future__ import annotations

import glob
import json
import os
import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from hwdeploy.sdk.cache import build_once, cache_dir
from hwdeploy.errors import BackendError

ENV_VAR = "HWDEPLOY_LITE_PYTHON"
#: How a candidate interpreter proves it runs, and how long it may take.
PROBE_CODE = "import sys; print(sys.version_info[:2])"
PROBE_TIMEOUT = 30.0
LITE_REQUIREMENT = "paddlelite==2.13rc0"
NUMPY_REQUIREMENT = "numpy<2"  # the cp310 Lite wheel is built against numpy 1.x
#: CPython minor versions with some paddlelite wheel (2.13rc0: 3.10 only; 3.7-3.9 have older Lite builds,
#: usable through $HWDEPLOY_LITE_PYTHON or an existing install).
SUPPORTED_MINORS = (10, 9, 8, 7)
MARKER = "hwdeploy-lite-env.json"


@dataclass(frozen=True)
class LitePython:
    """An interpreter the Lite worker can run under, and where it came from."""

    path: str
    source: str  # "env" ($HWDEPLOY_LITE_PYTHON) | "managed" (setup_lite_env) | "found" (discovered)


def managed_env_dir() -> Path:
    """The directory :func:`setup_lite_env` creates (one per Lite requirement)."""
    tag = LITE_REQUIREMENT.replace("==", "-")
    return cache_dir("lite-env") / tag


def _venv_python(env_dir: Path) -> Path:
    return env_dir / "bin" / "python"


def find_lite_python() -> LitePython | None:
    """The interpreter to run Paddle Lite with, or None if there is none (see :func:`missing_reason`).

    Cheap: checks files only, never starts a process.
    """
    explicit = os.environ.get(ENV_VAR)
    if explicit:
        return LitePython(explicit, "env")
    managed = managed_env_dir()
    if (managed / MARKER).exists() and _venv_python(managed).exists():
        return LitePython(str(_venv_python(managed)), "managed")
    for python, minor in _candidate_pythons():
        prefix = Path(python).resolve().parent.parent
        if glob.glob(str(prefix / "lib" / f"python3.{minor}" / "site-packages" / "paddlelite" / "lite*.so")):
            return LitePython(python, "found")
    return None


def missing_reason() -> str:
    """Why no Lite interpreter is available, and how to fix it."""
    explicit = os.environ.get(ENV_VAR)
    if explicit and not os.path.exists(explicit):
        return f"${ENV_VAR}={explicit} does not exist"
    return (f"no Paddle Lite runtime: run `hwdeploy lite-setup` (creates a CPython <= 3.10 venv with "
            f"{LITE_REQUIREMENT} in {managed_env_dir()}), or set ${ENV_VAR} to a CPython <= 3.10 with paddlelite")


def pyenv_roots() -> list[str]:
    """Where pyenv keeps its versions: ``$PYENV_ROOT`` (read now, not at import), then ``~/.pyenv``."""
    roots = [os.environ.get("PYENV_ROOT") or "", str(Path.home() / ".pyenv")]
    return list(dict.fromkeys(r for r in roots if r))


def _candidate_pythons() -> list[tuple[str, int]]:
    """CPython 3.7-3.10 interpreter *files* on this machine, newest minor first; for each minor
    ``$PYENV_ROOT/versions/3.X.*/bin``, then ``~/.pyenv/versions/3.X.*/bin``, then each ``python3.X`` on PATH.

    Cheap (no process is started), so a path may still not run: see :func:`probe_python`.
    """
    found: list[tuple[str, int]] = []
    for minor in SUPPORTED_MINORS:
        for root in pyenv_roots():
            for version_dir in sorted(glob.glob(os.path.join(root, "versions", f"3.{minor}.*")), reverse=True):
                for name in ("python", f"python3.{minor}"):
                    found.append((os.path.join(version_dir, "bin", name), minor))
        for folder in os.environ.get("PATH", os.defpath).split(os.pathsep):
            if folder:  # every python3.X on PATH, not only the first: that one may be a broken shim
                found.append((os.path.join(folder, f"python3.{minor}"), minor))
    seen, unique = set(), []
    for path, minor in found:
        real = os.path.realpath(path)
        if real not in seen and os.path.isfile(path) and os.access(path, os.X_OK):
            seen.add(real)
            unique.append((path, minor))
    return unique


def probe_python(path: str, timeout: float | None = None) -> tuple[tuple[int, int] | None, str]:
    """Run ``path -c 'import sys; print(sys.version_info[:2])'``: ``((major, minor), "")`` when it
    works, else ``(None, why)`` (exit status and the first line it printed, a timeout, ...)."""
    timeout = PROBE_TIMEOUT if timeout is None else timeout
    try:
        proc = subprocess.run([path, "-c", PROBE_CODE], capture_output=True, text=True, timeout=timeout,
                              stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired:
        return None, f"did not answer within {timeout:g}s"
    except OSError as exc:
        return None, f"cannot be started ({exc.strerror or exc})"
    if proc.returncode != 0:
        said = (proc.stderr or proc.stdout or "").strip().splitlines()
        return None, f"exit {proc.returncode}" + (f": {said[0].strip()}" if said else "")
    match = re.fullmatch(r"\((\d+), (\d+)\)", proc.stdout.strip())
    if not match:
        return None, f"printed {proc.stdout.strip()[:80]!r} instead of its version"
    return (int(match.group(1)), int(match.group(2))), ""


@dataclass(frozen=True)
class BaseSearch:
    """The outcome of :func:`search_base_python`: the interpreter chosen, and every candidate rejected."""

    chosen: str | None
    rejected: tuple[tuple[str, str], ...]  # (path, why)

    def explain(self) -> str:
        if not self.rejected:
            return ("no candidate found (looked in " + ", ".join(
                f"{r}/versions/3.10.*/bin" for r in pyenv_roots()) + ", and for python3.10 on PATH)")
        return "rejected: " + "; ".join(f"{path} ({why})" for path, why in self.rejected)


def search_base_python(minor: int = 10) -> BaseSearch:
    """The first CPython 3.``minor`` candidate that really runs and reports that version."""
    rejected = []
    for path, expected in _candidate_pythons():
        if expected != minor:
            continue
        version, why = probe_python(path)
        if version == (3, minor):
            return BaseSearch(path, tuple(rejected))
        rejected.append((path, why or f"reports Python {version[0]}.{version[1]}, not 3.{minor}"))
    return BaseSearch(None, tuple(rejected))


def find_base_python() -> str | None:
    """A CPython 3.10 to build the Lite venv from (paddlelite 2.13rc0 has cp310 wheels only), proven to run."""
    return search_base_python().chosen


def setup_lite_env(base_python: str | None = None, *, force: bool = False, timeout: float = 600.0,
                   log=None) -> Path:
    """Create (once) the Lite venv in hwdeploy's cache and return its interpreter.

    ``base_python`` defaults to a discovered CPython 3.10 (pyenv's, or ``python3.10`` on PATH).
    Installs ``paddlelite==2.13rc0`` and ``numpy<2`` with pip (about 10 s with a warm pip cache,
    ~260 MB), then checks that ``import paddlelite.lite`` works. Safe against concurrent callers:
    the venv is built under a temporary name and renamed into place.
    """
    env_dir = managed_env_dir()
    if force and env_dir.exists():
        shutil.rmtree(env_dir)
    if (env_dir / MARKER).exists():
        return _venv_python(env_dir)
    if base_python:
        version, why = probe_python(base_python)
        if version != (3, 10):
            raise BackendError(f"cannot set up Paddle Lite with {base_python}: "
                               + (why or f"it is Python {version[0]}.{version[1]}, and paddlelite 2.13 wheels"
                                         " exist for CPython 3.10 only"))
        base = base_python
    else:
        search = search_base_python()
        base = search.chosen
        if not base:
            raise BackendError("cannot set up Paddle Lite: no working CPython 3.10 found (paddlelite 2.13 wheels"
                               f" exist for CPython <= 3.10 only); {search.explain()}. Install one (e.g."
                               " `pyenv install 3.10`; set $PYENV_ROOT if pyenv lives elsewhere than ~/.pyenv)"
                               f" and pass it with --python, or set ${ENV_VAR} to an interpreter that has"
                               " paddlelite")

    def say(message: str) -> None:
        if log:
            log(message)

    def build(tmp: Path) -> None:
        say(f"creating venv with {base} in {env_dir}")
        _check(subprocess.run([base, "-m", "venv", str(tmp)], capture_output=True, text=True, timeout=timeout),
               "python -m venv")
        python = str(_venv_python(tmp))
        say(f"installing {LITE_REQUIREMENT} {NUMPY_REQUIREMENT}")
        _check(subprocess.run([python, "-m", "pip", "install", "--disable-pip-version-check", "-q",
                               LITE_REQUIREMENT, NUMPY_REQUIREMENT],
                              capture_output=True, text=True, timeout=timeout), "pip install")
        probe = subprocess.run([python, "-c", "import json, sys, paddlelite.lite as l, numpy;"
                                "print(json.dumps({'lite': l.Opt().version(), 'numpy': numpy.__version__,"
                                " 'python': sys.version.split()[0]}))"],
                               capture_output=True, text=True, timeout=120)
        _check(probe, "import paddlelite.lite")
        info = json.loads(probe.stdout.strip().splitlines()[-1])
        info.update(base_python=base, requirement=LITE_REQUIREMENT)
        (tmp / MARKER).write_text(json.dumps(info, indent=1))

    build_once(env_dir, build, verify="size")  # a venv: Python adds __pycache__ files later; sizes of what pip installed
    # A venv's python finds its site-packages next to pyvenv.cfg, so renaming the directory is safe.
    return _venv_python(env_dir)


def ensure_lite_python(create: bool = False) -> LitePython:
    """The Lite interpreter; with ``create=True`` make the managed env if none is found."""
    found = find_lite_python()
    if found:
        return found
    if create:
        return LitePython(str(setup_lite_env()), "managed")
    raise BackendError(missing_reason())


def _check(proc: subprocess.CompletedProcess, what: str) -> None:
    if proc.returncode != 0:
        tail = "\n".join((proc.stderr or proc.stdout or "").strip().splitlines()[-15:])
        raise BackendError(f"Paddle Lite set-up failed at {what} (exit {proc.returncode}):\n{tail}")


def env_info() -> dict:
    """What the managed env recorded at set-up (versions), or {}."""
    try:
        return json.loads((managed_env_dir() / MARKER).read_text())
    except (OSError, ValueError):
        return {}

