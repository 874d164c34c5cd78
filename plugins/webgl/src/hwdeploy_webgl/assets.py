"""The Paddle.js runtime: two pinned npm packages, installed at set-up time and checked by sha256.

The bundles are third-party code, so they are not part of this package:
``hwdeploy webgl-setup`` (or :func:`install`) runs ``npm install`` of the
pinned versions into hwdeploy's cache, and every load checks the sha256 of
both UMD bundles against the pins below. A different or tampered file is an
error, never silently used.

``$HWDEPLOY_PADDLEJS_DIR`` points at an existing install instead (a folder
holding ``node_modules/@paddlejs/...``), e.g. one a CI image prepared.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from hwdeploy.sdk.cache import build_once, cache_dir
from hwdeploy.errors import BackendError

ENV_DIR = "HWDEPLOY_PADDLEJS_DIR"


@dataclass(frozen=True)
class Bundle:
    package: str  # npm package name
    version: str
    file: str  # the UMD bundle inside the package
    sha256: str
    served_as: str  # the name the browser page loads it under


BUNDLES = (
    Bundle("@paddlejs/paddlejs-core", "2.2.0", "lib/index.js",
           "a9d3300e820cacff81665e28f7da85fd86595a3a81117d99e2217891663fe70b", "paddlejs-core.js"),
    Bundle("@paddlejs/paddlejs-backend-webgl", "1.2.9", "lib/index.js",
           "94372ebb2fb60b4e8ac936066b125d93f89d90ef85c89e722db6a1e7ae382316", "paddlejs-backend-webgl.js"),
)
SETUP_HINT = "run `hwdeploy webgl-setup` (npm install of the pinned Paddle.js packages from the npm registry)"


class AssetsError(BackendError):
    """The Paddle.js bundles are missing, of the wrong version, or fail their sha256 check."""


def versions() -> dict[str, str]:
    return {b.package.split("/")[-1]: b.version for b in BUNDLES}


def default_root() -> Path:
    """Where :func:`install` puts the packages: ``$HWDEPLOY_PADDLEJS_DIR`` or the cache."""
    override = os.environ.get(ENV_DIR)
    if override:
        return Path(override)
    tag = "_".join(f"{b.package.split('/')[-1]}-{b.version}" for b in BUNDLES)
    return cache_dir("webgl") / tag


def _bundle_path(root: Path, bundle: Bundle) -> Path:
    return root / "node_modules" / bundle.package / bundle.file


def problems(root: Path | None = None) -> list[str]:
    """What is wrong with the install at ``root`` (empty when both bundles verify)."""
    root = Path(root) if root else default_root()
    found = []
    for bundle in BUNDLES:
        path = _bundle_path(root, bundle)
        if not path.is_file():
            found.append(f"{bundle.package}@{bundle.version} is not installed (no {path})")
            continue
        digest = hashlib.sha256(path.read_bytes()).hexdigest()
        if digest != bundle.sha256:
            meta = path.parents[len(Path(bundle.file).parts) - 1] / "package.json"
            try:
                version = json.loads(meta.read_text()).get("version", "?")
            except (OSError, ValueError):
                version = "?"
            found.append(f"{path} (version {version}) has sha256 {digest}, expected {bundle.sha256}"
                         f" for {bundle.package}@{bundle.version}")
    return found


def load(root: Path | None = None) -> dict[str, bytes]:
    """The verified bundles, ``{served name: bytes}``; raises :class:`AssetsError` with the fix."""
    root = Path(root) if root else default_root()
    out = {}
    for bundle in BUNDLES:
        path = _bundle_path(root, bundle)
        try:
            data = path.read_bytes()
        except OSError:
            raise AssetsError(f"Paddle.js bundle {bundle.package}@{bundle.version} not found at {path}; "
                              + SETUP_HINT) from None
        digest = hashlib.sha256(data).hexdigest()
        if digest != bundle.sha256:
            raise AssetsError(f"{path}: sha256 {digest} does not match the pinned {bundle.package}@{bundle.version}"
                              f" ({bundle.sha256}); reinstall with `hwdeploy webgl-setup --force`")
        out[bundle.served_as] = data
    return out


def npm_install_command(npm: str, specs: list[str]) -> list[str]:
    """The ``npm install`` that :func:`install` runs, in the folder to install into (no ``--prefix``).

    Nothing here overrides npm's own configuration: the user's ``~/.npmrc`` (or
    ``$NPM_CONFIG_USERCONFIG``), the global ``<npm prefix>/etc/npmrc`` and ``npm_config_*``
    variables all apply, as they do for any ``npm install`` on this machine. ``--prefer-offline``
    lets npm's cache serve repeat installs (a cold cache just downloads; the sha256 check applies either way).
    """
    return [npm, "install", "--prefer-offline", "--no-audit", "--no-fund", "--ignore-scripts", "--save-exact", *specs]


def install(root: Path | None = None, *, force: bool = False, npm: str | None = None, timeout: float = 600) -> Path:
    """``npm install`` the pinned packages into ``root`` (default: the cache) and verify them.

    Idempotent: a verified install is left alone unless ``force``. The install
    is built in a temporary folder and renamed into place, so a failed or
    interrupted install never leaves files that a later run trusts.
    """
    root = Path(root) if root else default_root()
    if not force and not problems(root):
        return root
    npm = npm or shutil.which("npm")
    if not npm:
        raise AssetsError("npm not found on PATH: install Node.js/npm (Debian: apt-get install -y npm), or set "
                          f"${ENV_DIR} to a folder holding node_modules/@paddlejs/...")
    if root.exists():
        shutil.rmtree(root)
    specs = [f"{b.package}@{b.version}" for b in BUNDLES]

    def build(tmp: Path) -> None:
        # npm runs *in* the folder (its package.json makes it the project root) rather than with
        # `--prefix`: `--prefix DIR` also moves npm's global config to DIR/etc/npmrc, so the machine's
        # configuration (a registry mirror, a `cafile` for a TLS-intercepting proxy, ...) would be ignored.
        (tmp / "package.json").write_text(json.dumps({"name": "hwdeploy-paddlejs-assets", "private": True}))
        cmd = npm_install_command(npm, specs)
        try:
            proc = subprocess.run(cmd, cwd=tmp, capture_output=True, text=True, timeout=timeout,
                                  stdin=subprocess.DEVNULL)
        except subprocess.TimeoutExpired:
            raise AssetsError(f"`{' '.join(cmd)}` (in {tmp}) timed out after {timeout:g}s") from None
        if proc.returncode != 0:
            tail = (proc.stderr or proc.stdout).strip().splitlines()[-5:]
            raise AssetsError(f"`npm install {' '.join(specs)}` failed (exit {proc.returncode}): " + " | ".join(tail))
        bad = problems(tmp)
        if bad:
            raise AssetsError("installed Paddle.js does not verify: " + "; ".join(bad))

    build_once(root, build, verify="size")  # node_modules: sizes of the installed files, not their hashes
    return root
