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
    from hwdeploy.contract.manager import reset_plugin_manager

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


def rel_l2(reference, output) -> float:
    """Relative L2 error of ``output`` against ``reference``, computed in float64 (parity checks)."""
    import numpy as np

    reference, output = np.asarray(reference, np.float64), np.asarray(output, np.float64)
    return float(np.linalg.norm(output - reference) / np.linalg.norm(reference))


def run_clones_in_threads(predictor, inputs: Sequence, *, clones: int = 3, runs: int = 20) -> list:
    """Run ``predictor.clone()``s concurrently, one thread each, ``runs`` times; return every first output.

    The first exception raised in any thread is re-raised here, so a test sees it.
    """
    import threading

    results, errors = [], []

    def work(clone):
        try:
            for _ in range(runs):
                results.append(clone.run(*inputs)[0])
        except Exception as exc:  # re-raised below, in the caller's thread
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(predictor.clone(),)) for _ in range(clones)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        raise errors[0]
    return results


def assert_parity(reference, candidate, inputs: Sequence, *, tol: float = 1e-4) -> None:
    """Assert that two predictors give the same output shapes and outputs within relative L2 ``tol``."""
    expected, got = reference.run(*inputs), candidate.run(*inputs)
    assert [o.shape for o in got] == [e.shape for e in expected], (
        f"output shapes {[o.shape for o in got]} != reference {[e.shape for e in expected]}")
    for i, (e, o) in enumerate(zip(expected, got)):
        error = rel_l2(e, o)
        assert error <= tol, f"output {i}: relative L2 error {error:.3g} > {tol}"
