"""Helpers for testing plugins: install a plugin through a real entry point, without pip.

``install_plugin`` writes a module and a ``*.dist-info`` directory (METADATA
with ``Requires-Dist``, ``entry_points.txt``) into a folder, exactly what pip
would leave in site-packages. Put the folder on ``sys.path`` (or ``PYTHONPATH``
for a subprocess) and ``importlib.metadata`` finds the entry point, so the
plugin goes through hwdeploy's real loading path, compatibility check included.
"""

from __future__ import annotations

import os
import sys
import textwrap
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator, Sequence


def install_plugin(site: Path, name: str, source: str, *, requires: Sequence[str] = (), version: str = "1.0",
                   entry_point: str | None = None, module: str | None = None) -> Path:
    """Write plugin ``name`` (module source ``source``) with its distribution metadata into ``site``.

    ``requires`` become ``Requires-Dist`` lines (e.g. ``"hwdeploy>=99"`` to make
    it incompatible); ``entry_point`` overrides the target (default: the module).
    """
    site = Path(site)
    site.mkdir(parents=True, exist_ok=True)
    module = module or f"hwdeploy_test_{name.replace('-', '_')}"
    (site / f"{module}.py").write_text(textwrap.dedent(source))
    dist = f"hwdeploy_test_{name.replace('-', '_')}"
    info = site / f"{dist}-{version}.dist-info"
    info.mkdir(exist_ok=True)
    metadata = [f"Metadata-Version: 2.1", f"Name: {dist.replace('_', '-')}", f"Version: {version}"]
    metadata += [f"Requires-Dist: {r}" for r in requires]
    (info / "METADATA").write_text("\n".join(metadata) + "\n")
    (info / "entry_points.txt").write_text(f"[hwdeploy]\n{name} = {entry_point or module}\n")
    (info / "RECORD").write_text("")
    return site


@contextmanager
def plugins_on_path(site: Path) -> Iterator[None]:
    """Make plugins installed in ``site`` visible to this process; forget them afterwards."""
    from hwdeploy.plugins import reset_plugin_manager

    sys.path.insert(0, str(site))
    old = os.environ.get("PYTHONPATH")
    os.environ["PYTHONPATH"] = str(site) + (os.pathsep + old if old else "")
    reset_plugin_manager()
    try:
        yield
    finally:
        sys.path.remove(str(site))
        if old is None:
            os.environ.pop("PYTHONPATH", None)
        else:
            os.environ["PYTHONPATH"] = old
        for mod in [m for m in sys.modules if m.startswith("hwdeploy_test_")]:
            del sys.modules[mod]
        reset_plugin_manager()
