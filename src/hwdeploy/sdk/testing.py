"""Helpers for testing plugins (hwdeploy's own and a vendor's): real entry points, real models, parity.

- :func:`install_plugin` writes a module and a ``*.dist-info`` directory (METADATA
  with ``Requires-Dist``, ``entry_points.txt``) into a folder, exactly what pip
  would leave in site-packages. Put the folder on ``sys.path`` (or ``PYTHONPATH``
  for a subprocess; :func:`plugins_on_path` does both) and ``importlib.metadata``
  finds the entry point, so the plugin goes through hwdeploy's real loading path,
  compatibility check included.
- :func:`build_model` saves a model from a Paddle script in a subprocess (the test
  process stays Paddle-free); :data:`ONNX_UNMAPPED` and :data:`ONNX_MAPPER_FAILS`
  (:func:`build_onnx_unconvertible`) are real models paddle2onnx cannot convert,
  :data:`UPSAMPLE_NEAREST` one it converts only after hwdeploy's fix-up, and
  :func:`count_onnx_exports` counts real exports, for plugins that read ONNX.
- :func:`rel_l2` (the one relative-error metric of tests, benchmarks and the
  conformance suite), :func:`assert_parity`, :func:`run_clones_in_threads`,
  :func:`assert_clones_agree`, :func:`modules_imported_by_discovery`.
- :func:`wrong_values` and :func:`assert_refuses_wrong_options` drive a backend's
  real entry point with a wrong value for every option of its schema;
  :func:`assert_options_documented` checks ``docs/options.md`` against the schemas.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence


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
    metadata = ["Metadata-Version: 2.1", f"Name: {dist.replace('_', '-')}", f"Version: {version}"]
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


#: One value of each common type: an option refuses those its declared type(s) do not cover.
_ANY_TYPE_SAMPLES: tuple[Any, ...] = ("no", 7, 2.5, True, [1], {"a": 1}, b"raw")


def wrong_values(option) -> list[Any]:
    """Values ``option`` (an :class:`hwdeploy.sdk.options.Option`) must refuse: other types (a bool is never an
    int, ``"no"`` never a bool), one step outside its range, a value of its type outside its choices."""
    types = option.type if isinstance(option.type, tuple) else (option.type,)
    if object in types:
        return []
    wrong = [v for v in _ANY_TYPE_SAMPLES
             if not isinstance(v, types) or (isinstance(v, bool) and bool not in types)]
    if option.choices is not None:
        wrong.append("no-such-choice" if str in types else -12345)
    if option.minimum is not None:
        wrong.append(option.minimum - 1)
    if option.maximum is not None:
        wrong.append(option.maximum + 1)
    return wrong


def assert_refuses_wrong_options(schema, call: Callable[[dict], Any]) -> int:
    """``call({name: wrong})`` must raise :class:`hwdeploy.OptionError` naming the option, for every option of
    ``schema`` and every :func:`wrong_values` of it; returns how many cases ran. ``call`` is the real entry
    point (``lambda o: hwdeploy.predictor(model, "acme", **o)``), so the test proves the wiring, not the schema."""
    from hwdeploy.errors import OptionError

    cases, accepted = 0, []
    for name, option in schema.options.items():
        for value in wrong_values(option):
            cases += 1
            try:
                result = call({name: value})
            except OptionError as exc:
                if name not in str(exc):
                    accepted.append(f"{name}={value!r}: the OptionError does not name the option: {exc}")
                continue
            close = getattr(result, "close", None)
            if callable(close):
                close()
            accepted.append(f"{name}={value!r} accepted")
    assert not accepted, f"{schema.owner}: " + "; ".join(accepted)
    return cases


def assert_options_documented(schemas, docs: Path) -> None:
    """Each ``(owner, schema)``'s section of ``docs`` (``docs/options.md``) is exactly what
    ``hwdeploy options --markdown`` generates from it now: regenerate the file when a schema changes."""
    from hwdeploy.sdk.options import markdown_section

    sections = {}
    for chunk in ("\n" + Path(docs).read_text()).split("\n## ")[1:]:
        sections[chunk.split("\n", 1)[0]] = "## " + chunk.rstrip("\n") + "\n"
    stale = [schema.owner for owner, schema in schemas if sections.get(schema.owner) != markdown_section(owner, schema)]
    assert not stale, f"{docs}: sections {stale} are stale or missing: run `hwdeploy options --markdown > {docs}`"


def bad_calibrations(name: str, row_shape: tuple[int, ...]) -> list[tuple[Any, type, str]]:
    """``(calibration, error type, message pattern)`` for a one-input float32 model: every way
    :mod:`hwdeploy.sdk.calibration` must refuse, before any quantizer runs (a quantizing plugin's tests)."""
    import numpy as np

    from hwdeploy.errors import InputError, OptionError

    good = np.zeros((4, *row_shape), np.float32)
    wrong_row = (row_shape[0] + 2, *row_shape[1:])
    return [([], OptionError, "empty"), (good[:0], OptionError, "empty"),
            (good.astype(np.float64), InputError, "dtype"), (np.zeros((4, *wrong_row), np.float32), InputError, "shape"),
            (good[:, 0], InputError, "shape"), (np.full_like(good, np.nan), InputError, "NaN"),
            (np.full_like(good, -np.inf), InputError, "NaN or Inf"), ([{name + "_other": good}], InputError, "do not match"),
            ([[good] * 2], InputError, "inputs"), ([[good.tolist()]], InputError, "numpy array"),
            (42, OptionError, "iterable"), ("calibration.txt", OptionError, ".npz")]


def logits_of(predictor, x, rows: int = 64):
    """The first output of ``predictor`` on ``x``, run ``rows`` rows at a time (a test split in one array)."""
    import numpy as np

    return np.concatenate([predictor.run(x[i:i + rows])[0] for i in range(0, len(x), rows)])


def top1_accuracy(logits, labels) -> float:
    """The share of rows whose largest logit is the label's."""
    import numpy as np

    return float((np.asarray(logits).argmax(axis=1) == np.asarray(labels)).mean())


def rel_l2(output, reference) -> float:
    """Relative L2 error ``||output - reference|| / ||reference||``, in float64, over all elements.

    The one implementation hwdeploy's tests, benchmarks and the conformance suite share.
    0.0 when both are exactly zero, ``inf`` when only the reference is (no scale to judge by).
    """
    import numpy as np

    out = np.asarray(output, dtype=np.float64).ravel()
    ref = np.asarray(reference, dtype=np.float64).ravel()
    norm, diff = np.linalg.norm(ref), np.linalg.norm(out - ref)
    if norm == 0:
        return 0.0 if diff == 0 else float("inf")
    return float(diff / norm)


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


def assert_clones_agree(predictor, inputs: Sequence, *, clones: int = 3, runs: int = 20) -> None:
    """Assert that clones run concurrently in threads all return exactly ``predictor``'s own first output."""
    import numpy as np

    expected = predictor.run(*inputs)[0]
    results = run_clones_in_threads(predictor, inputs, clones=clones, runs=runs)
    assert len(results) == clones * runs, f"{len(results)} results from {clones} clones x {runs} runs"
    differ = sum(not np.array_equal(r, expected) for r in results)
    assert not differ, f"{differ} of {len(results)} outputs of clones differ from the predictor's own"


def assert_parity(reference, candidate, inputs: Sequence, *, tol: float = 1e-4, same_names: bool = True) -> None:
    """Assert that two predictors give the same output shapes and outputs within relative L2 ``tol``
    (and, with ``same_names``, the same input and output names)."""
    expected, got = reference.run(*inputs), candidate.run(*inputs)
    assert [o.shape for o in got] == [e.shape for e in expected], (
        f"output shapes {[o.shape for o in got]} != reference {[e.shape for e in expected]}")
    for i, (e, o) in enumerate(zip(expected, got)):
        error = rel_l2(o, e)
        assert error <= tol, f"output {i}: relative L2 error {error:.3g} > {tol}"
    if same_names:
        assert candidate.input_names == reference.input_names, (candidate.input_names, reference.input_names)
        assert candidate.output_names == reference.output_names, (candidate.output_names, reference.output_names)


_DISCOVERY_PROBE = """
import json, sys
import hwdeploy
roots = set(sys.argv[2:])
found = [d.id for d in hwdeploy.devices() if d.backend == sys.argv[1]]
print(json.dumps({"found": found, "imported": sorted(m for m in sys.modules if m.split(".")[0] in roots)}))
"""


def modules_imported_by_discovery(backend: str, roots: Sequence[str], *, timeout: float = 120) -> list[str]:
    """The modules under ``roots`` (``"paddle"``, a runtime's package) that ``hwdeploy.devices()`` imports.

    Runs in a fresh interpreter (this one has imported who knows what) and asserts that a device of
    ``backend`` was discovered there at all. A plugin whose discovery stays light returns ``[]``.
    """
    import json

    out = subprocess.run([sys.executable, "-c", _DISCOVERY_PROBE, backend, *roots], capture_output=True, text=True,
                         timeout=timeout)
    assert out.returncode == 0, out.stderr
    report = json.loads(out.stdout.strip().splitlines()[-1])
    assert report["found"], f"no device of backend {backend!r} was discovered"
    return report["imported"]


# ---------------------------------------------------------------- real models, built in a subprocess


def build_model(source: str, prefix: Path, *, timeout: float = 120) -> Path:
    """Run a model-saving script (``sys.argv[1]`` is the prefix to ``paddle.jit.save`` to) in a subprocess.

    The test process stays Paddle-free. The script is written next to the model first: dy2static
    reads the layer's source, so it must live in a file.
    """
    prefix = Path(prefix)
    prefix.parent.mkdir(parents=True, exist_ok=True)
    script = prefix.parent / "build_model.py"
    script.write_text(textwrap.dedent(source))
    try:
        subprocess.run([sys.executable, str(script), str(prefix)], check=True, capture_output=True, timeout=timeout)
    finally:
        script.unlink(missing_ok=True)
    return prefix


#: A PIR model with two ops paddle2onnx 2.1 has no ONNX mapper for (``pd_op.det``, ``pd_op.inverse``):
#: paddle2onnx aborts its process on it. x: [-1, 4, 4] float32. See :data:`ONNX_UNMAPPED_OPS`.
ONNX_UNMAPPED = """
    import sys
    import paddle

    class DetInv(paddle.nn.Layer):
        def __init__(self):
            super().__init__()
            self.fc = paddle.nn.Linear(4, 4)

        def forward(self, x):
            y = self.fc(x)
            return paddle.linalg.det(y), paddle.linalg.inv(y)

    layer = DetInv()
    layer.eval()
    paddle.jit.save(layer, sys.argv[1], input_spec=[paddle.static.InputSpec([None, 4, 4], "float32", "x")])
"""
ONNX_UNMAPPED_OPS = ["pd_op.det", "pd_op.inverse"]

#: A PIR model with a float64 ``scale`` (conv + 2x nearest resize): Paddle 3.3 writes ``nearest_interp``'s
#: ``scale`` as float64, paddle2onnx 2.1 expects float32 (hwdeploy's export fixes a copy up), and Paddle 3.3's
#: oneDNN cannot run it (``ConvertPirAttribute2RuntimeAttribute``). x: [-1, 3, 8, 8] float32.
UPSAMPLE_NEAREST = """
    import sys
    import paddle

    class Upsample(paddle.nn.Layer):
        def __init__(self):
            super().__init__()
            self.conv = paddle.nn.Conv2D(3, 4, 3, padding=1)

        def forward(self, x):
            return paddle.nn.functional.interpolate(self.conv(x), scale_factor=2, mode="nearest")

    layer = Upsample()
    layer.eval()
    paddle.jit.save(layer, sys.argv[1], input_spec=[paddle.static.InputSpec([None, 3, 8, 8], "float32", "x")])
"""

#: A PIR model paddle2onnx 2.1 has a mapper for but fails on: ``nearest_interp`` in NHWC ("Data format of
#: NHWC is not supported"). x: [-1, 3, 8, 8] float32.
ONNX_MAPPER_FAILS = """
    import sys
    import paddle

    class UpsampleNHWC(paddle.nn.Layer):
        def __init__(self):
            super().__init__()
            self.conv = paddle.nn.Conv2D(3, 4, 3, padding=1)

        def forward(self, x):
            y = self.conv(x).transpose([0, 2, 3, 1])
            return paddle.nn.functional.interpolate(y, size=[16, 16], mode="nearest", data_format="NHWC")

    layer = UpsampleNHWC()
    layer.eval()
    paddle.jit.save(layer, sys.argv[1], input_spec=[paddle.static.InputSpec([None, 3, 8, 8], "float32", "x")])
"""
ONNX_MAPPER_FAILS_OPS = ["pd_op.nearest_interp"]


def build_onnx_unconvertible(root: Path) -> dict[str, Path]:
    """Build :data:`ONNX_UNMAPPED` and :data:`ONNX_MAPPER_FAILS` under ``root``: ``{"unmapped": dir, "mapper_fails": dir}``."""
    root = Path(root)
    return {"unmapped": build_model(ONNX_UNMAPPED, root / "unmapped" / "model").parent,
            "mapper_fails": build_model(ONNX_MAPPER_FAILS, root / "mapper_fails" / "model").parent}


def count_onnx_exports(monkeypatch) -> list[str]:
    """Count the ONNX exports of this process: the list grows by a model's sha256 each time paddle2onnx runs.

    A spy, not a fake: the real :func:`hwdeploy.sdk.onnx_export.export_onnx` still runs. ``monkeypatch`` is
    pytest's fixture (the spy goes away with the test). With it a plugin's test proves that it reuses the
    cached export of the built-in ``onnx`` target instead of converting again.
    """
    from hwdeploy.sdk import onnx_export

    exports: list[str] = []
    real_export = onnx_export.export_onnx

    def counted_export(model, *args, **kwargs):
        exports.append(model.sha256)
        return real_export(model, *args, **kwargs)

    monkeypatch.setattr(onnx_export, "export_onnx", counted_export)
    return exports
