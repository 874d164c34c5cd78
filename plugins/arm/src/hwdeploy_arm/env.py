"""The Paddle Lite environment: a CPython <= 3.10 with ``paddlelite`` that the worker runs under.

PyPI's ``paddlelite`` wheels exist only for CPython 3.7-3.10, so Lite never runs inside the
(3.11+) host process. The interpreter is, in this order:

1. ``$HWDEPLOY_LITE_PYTHON`` (any interpreter that can ``import paddlelite.lite``);
2. the environment :func:`setup_lite_env` made in hwdeploy's cache
   (``$HWDEPLOY_CACHE_DIR/lite-env/...``; ``hwdeploy lite-setup`` on the command line);
3. a CPython 3.7-3.10 that already has ``paddlelite`` installed (pyenv versions, ``python3.X`` on PATH).

Nothing here imports Paddle or Lite; probes run in subprocesses.
"""

from __future__ import annotations

import glob
import json
import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from hwdeploy.sdk.cache import build_once, cache_dir
from hwdeploy.errors import BackendError

ENV_VAR = "HWDEPLOY_LITE_PYTHON"
#: Where to look for a base interpreter for :func:`setup_lite_env` besides PATH (pyenv's default root).
PYENV_ROOTS = (os.environ.get("PYENV_ROOT") or "", str(Path.home() / ".pyenv"))
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


def _candidate_pythons() -> list[tuple[str, int]]:
    """CPython 3.7-3.10 interpreters on this machine, newest first: pyenv versions, then PATH."""
    found: list[tuple[str, int]] = []
    for minor in SUPPORTED_MINORS:
        for root in PYENV_ROOTS:
            if root:
                for path in sorted(glob.glob(os.path.join(root, "versions", f"3.{minor}.*", "bin", "python")),
                                   reverse=True):
                    found.append((path, minor))
        on_path = shutil.which(f"python3.{minor}")
        if on_path:
            found.append((on_path, minor))
    seen, unique = set(), []
    for path, minor in found:
        real = os.path.realpath(path)
        if real not in seen and os.access(path, os.X_OK):
            seen.add(real)
            unique.append((path, minor))
    return unique


def find_base_python() -> str | None:
    """A CPython 3.10 to build the Lite venv from (paddlelite 2.13rc0 has cp310 wheels only)."""
    return next((path for path, minor in _candidate_pythons() if minor == 10), None)


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
    base = base_python or find_base_python()
    if not base:
        raise BackendError("cannot set up Paddle Lite: no CPython 3.10 found (paddlelite 2.13 wheels exist for"
                           " CPython <= 3.10 only). Install one (e.g. `pyenv install 3.10`) and pass it with"
                           f" --python, or set ${ENV_VAR} to an interpreter that has paddlelite")

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

    build_once(env_dir, build)
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

