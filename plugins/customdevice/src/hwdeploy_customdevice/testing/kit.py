"""Test helpers for CustomDevice vendor plugins on the simulated device: build it, run scenarios on it.

Two halves:

- the **parent** side (the pytest process): :func:`sim_root` builds the
  simulated device as the vendor's type or skips, :func:`tiny_models` builds two
  small models once, :func:`in_child` runs a scenario in a fresh Python process
  with ``CUSTOM_DEVICE_ROOT`` set (Paddle loads plugins only when first
  imported, so every test that needs the device runs in a child);
- the **child** side (``scenario_*`` functions, called through
  :func:`hwdeploy.sdk.isolation.run_probe`): run models through ``hwdeploy`` on
  the device and report receipts, parity with the CPU reference, the device's
  own kernel trace and Paddle's kernel inventory as JSON.

Any vendor's tests import it (``from hwdeploy_customdevice.testing import kit``);
:mod:`hwdeploy_customdevice.testing.suite` is built on it.
"""

from __future__ import annotations

import hashlib
import os
import warnings
from collections import Counter
from pathlib import Path
from typing import Any

from hwdeploy_customdevice import simulated

KERNELS = simulated.KERNELS

# ------------------------------------------------------------------------------------------- parent side


def sim_root(device_type: str, visible_env: str | None = None) -> Path:
    """The simulated ``device_type`` plugin directory (built once per run), or skip the test saying why.

    ``visible_env``: the vendor's visible-devices variable the device honours (see :func:`simulated.build`).
    """
    import pytest

    try:
        return simulated.build(device_type, visible_env=visible_env)
    except simulated.ToolsMissing as exc:
        pytest.skip(str(exc))


def in_child(scenario: str, *args: Any, env: dict[str, str | None] | None = None, timeout: float = 600.0):
    """Run ``<this module>.<scenario>(*args)`` in a fresh process; returns the :class:`ProbeResult`.

    ``env`` values of None remove the variable in the child.
    """
    from hwdeploy.sdk.isolation import run_probe

    child_env = {"OMP_NUM_THREADS": "1"}
    removed = [k for k, v in (env or {}).items() if v is None]
    child_env.update({k: v for k, v in (env or {}).items() if v is not None})
    if removed:  # run_probe only adds variables: remove these through the child's own prologue
        child_env["HWDEPLOY_TESTKIT_UNSET"] = ",".join(removed)
    return run_probe(f"{__name__}:{scenario}", list(args), timeout=timeout, env=child_env)


def child_value(result) -> Any:
    """The child's return value, or an assertion error with its stderr."""
    assert result.ok, f"child failed: {result.error}\n{result.stderr_tail}"
    return result.value


TINY_MODELS_SOURCE_KEY = "v1"


def tiny_models() -> Path:
    """A directory with two small PIR models, built once (in a child) and cached.

    - ``mlp_softmax``: Linear -> ReLU -> Linear -> softmax (x: [-1, 8]): softmax has no device kernel;
    - ``convnet``: conv -> batch_norm -> relu -> conv(stride 2, SAME) -> relu -> avg-pool -> flatten ->
      linear (x: [-1, 3, 16, 16]): batch_norm/pool2d have no device kernel, the relu and flatten after
      them are carried to the CPU.
    """
    from hwdeploy.sdk.cache import build_once, cache_dir
    from hwdeploy.sdk.paddle_inference import paddle_version

    digest = hashlib.sha256(Path(__file__).read_bytes()).hexdigest()[:16]
    final = cache_dir("simdevice-models") / f"{TINY_MODELS_SOURCE_KEY}-{digest}-paddle{paddle_version()}"

    def make(tmp: Path) -> None:
        child_value(in_child("_build_tiny_models", str(tmp)))

    build_once(final, make)
    return final


# ------------------------------------------------------------------------------------------- child side


def _child_prologue() -> None:
    for name in filter(None, os.environ.pop("HWDEPLOY_TESTKIT_UNSET", "").split(",")):
        os.environ.pop(name, None)


_child_prologue()


def _build_tiny_models(out_dir: str) -> list[str]:
    """(child) Save the tiny models with ``paddle.jit.save`` (unit-scale weights)."""
    import numpy as np
    import paddle

    class MlpSoftmax(paddle.nn.Layer):
        def __init__(self):
            super().__init__()
            self.fc1 = paddle.nn.Linear(8, 32)
            self.fc2 = paddle.nn.Linear(32, 6)

        def forward(self, x):
            return paddle.nn.functional.softmax(self.fc2(paddle.nn.functional.relu(self.fc1(x))))

    class ConvNet(paddle.nn.Layer):
        def __init__(self):
            super().__init__()
            self.conv1 = paddle.nn.Conv2D(3, 8, 3, padding=1)
            self.bn = paddle.nn.BatchNorm2D(8)
            self.conv2 = paddle.nn.Conv2D(8, 12, 3, stride=2, padding="SAME", bias_attr=False)
            self.fc = paddle.nn.Linear(12, 5)

        def forward(self, x):
            y = paddle.nn.functional.relu(self.bn(self.conv1(x)))
            y = paddle.nn.functional.relu(self.conv2(y))
            return self.fc(paddle.nn.functional.adaptive_avg_pool2d(y, 1).flatten(1))

    rng = np.random.default_rng(3)
    saved = []
    for name, layer, shape in (("mlp_softmax", MlpSoftmax(), [None, 8]), ("convnet", ConvNet(), [None, 3, 16, 16])):
        for param in layer.parameters():
            fan_in = int(np.prod(param.shape[1:])) if len(param.shape) > 1 else 1
            param.set_value((rng.standard_normal(param.shape) / np.sqrt(fan_in)).astype("float32"))
        layer.eval()
        prefix = Path(out_dir) / name / "model"
        paddle.jit.save(layer, str(prefix), input_spec=[paddle.static.InputSpec(shape, "float32", "x")])
        saved.append(str(prefix.parent))
    return saved


def _inputs_for(model, batch: int, seed: int):
    if isinstance(model, str) and model.startswith("zoo:"):
        from hwdeploy import zoo

        return zoo.get(model[4:]).sample_inputs(batch=batch, seed=seed)
    from hwdeploy import load_model
    from hwdeploy.contract.model import model_io
    from hwdeploy.sdk.inputs import random_inputs

    inputs, _ = model_io(load_model(model))
    return random_inputs(inputs, batch=batch, seed=seed)


def _resolve(model: str):
    if model.startswith("zoo:"):
        from hwdeploy import zoo

        return zoo.get(model[4:]).model
    return model


def _trace_since(path: str | None, offset: int) -> dict[str, int]:
    if not path or not os.path.exists(path):
        return {}
    with open(path, "rb") as fh:
        fh.seek(offset)
        lines = fh.read().decode().splitlines()
    return dict(Counter(line.split()[2] for line in lines if line.startswith("simdevice ")))


def _trace_size(path: str | None) -> int:
    return os.path.getsize(path) if path and os.path.exists(path) else 0


def scenario_run(runs: list[list[str]], device: str, batch: int = 2, seed: int = 1,
                 inventory_type: str | None = None) -> dict[str, Any]:
    """(child) Each ``[model, fallback]`` on ``device`` vs the CPU reference, keyed ``"model|fallback"``.

    Per run: the error (and its receipt) if creation raised, else the receipt,
    the relative L2 error against the CPU reference, the device's own trace of
    one ``run()`` (kernel -> executions) and whether a clone gives the same
    outputs. With ``inventory_type``, ``"_inventory"`` holds
    :func:`scenario_inventory` of that type.
    """
    import numpy as np

    import hwdeploy

    trace = os.environ.get(simulated.TRACE_ENV)
    report: dict[str, Any] = {}
    for name, fallback in runs:
        model = _resolve(name)
        inputs = _inputs_for(name, batch, seed)
        reference = hwdeploy.predictor(model, device="cpu", threads=1).run(*inputs)
        entry: dict[str, Any] = {}
        report[f"{name}|{fallback}"] = entry
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            try:
                predictor = hwdeploy.predictor(model, device=device, fallback=fallback, threads=1)
            except hwdeploy.HwdeployError as exc:
                entry.update(error=type(exc).__name__, message=str(exc))
                if isinstance(exc, hwdeploy.FallbackError):
                    entry["receipt"] = exc.receipt.to_dict()
                continue
        entry["warnings"] = [str(w.message) for w in caught if issubclass(w.category, RuntimeWarning)]
        start = _trace_size(trace)
        outputs = predictor.run(*inputs)
        entry["trace"] = _trace_since(trace, start)
        entry["device"] = predictor.device.id
        entry["receipt"] = predictor.receipt().to_dict()
        entry["rel_l2"] = max(float(np.linalg.norm(o.astype("float64") - r) / max(np.linalg.norm(r), 1e-30))
                              for o, r in zip(outputs, reference))
        twin = predictor.clone()
        entry["clone_equal"] = all(np.array_equal(a, b) for a, b in zip(twin.run(*inputs), outputs))
        predictor.close()
    if inventory_type:
        report["_inventory"] = scenario_inventory(inventory_type)
    return report


def scenario_paddle_ran_first(model: str, device: str) -> dict[str, Any]:
    """(child) Run a plain Paddle predictor *before* hwdeploy, then ask hwdeploy for ``device``.

    Paddle's interpreter then runs before hwdeploy can register the
    kernel-program dump (glog binds each VLOG site once), so the placement
    must come from a fresh process.
    """
    import numpy as np
    from paddle import inference

    import hwdeploy
    from hwdeploy.contract.model import load_model

    loaded = load_model(_resolve(model))
    config = inference.Config(str(loaded.program), str(loaded.params))
    plain = inference.create_predictor(config)
    for name, array in zip(plain.get_input_names(), _inputs_for(model, 1, 0)):
        plain.get_input_handle(name).copy_from_cpu(np.ascontiguousarray(array))
    plain.run()
    predictor = hwdeploy.predictor(loaded, device=device, fallback="allow", threads=1)
    return predictor.receipt().to_dict()


def scenario_inventory(device_type: str) -> dict[str, Any]:
    """(child) Paddle's view of the device type: own float32 kernels, generic CUSTOM ones, device count."""
    from hwdeploy_customdevice import ensure_registered, kernel_inventory

    ensure_registered(device_type, 0)
    inventory = kernel_inventory()

    def having(backend: str) -> dict[str, list[str]]:
        table = {name: sorted({d for b, _l, d in keys if b == backend}) for name, keys in inventory.items()}
        return {name: dtypes for name, dtypes in table.items() if dtypes}

    from paddle.base import core

    return {"own": having(device_type), "generic": having("CUSTOM"),
            "count": int(core.get_custom_device_count(device_type))}


def scenario_devices() -> list[dict[str, Any]]:
    """(child) ``hwdeploy.devices()`` as dicts, best first."""
    import hwdeploy

    return [d.to_dict() for d in hwdeploy.devices(refresh=True)]


def scenario_auto(models: list[str]) -> dict[str, Any]:
    """(child) ``hwdeploy.predictor(model, device="auto")`` per model: the device chosen and those skipped."""
    import hwdeploy

    out = {}
    for model in models:
        predictor = hwdeploy.predictor(_resolve(model), device="auto", threads=1)
        receipt = predictor.receipt()
        out[model] = {"device": predictor.device.id, "plugin": receipt.plugin, "auto_skipped": receipt.auto_skipped}
    return out


def scenario_predictor_error(model: str, device: str, import_paddle_first_with_root: str | None = None) -> dict:
    """(child) The error ``hwdeploy.predictor(model, device)`` raises, if any (the process must survive).

    With ``import_paddle_first_with_root``, Paddle is imported *before* ``CUSTOM_DEVICE_ROOT`` is set to
    that directory: discovery (a fresh process) then sees the device, but this process's Paddle has no
    plugin, and ``enable_custom_device`` would abort it.
    """
    import hwdeploy

    if import_paddle_first_with_root:
        import paddle  # noqa: F401  - loads (no) plugins now

        os.environ["CUSTOM_DEVICE_ROOT"] = import_paddle_first_with_root
    try:
        hwdeploy.predictor(_resolve(model), device=device, threads=1)
    except hwdeploy.HwdeployError as exc:
        return {"error": type(exc).__name__, "message": str(exc),
                "devices": [(d.id, d.available) for d in hwdeploy.devices()]}
    return {"error": None}


# ------------------------------------------------------------------------------------------- shared checks


def device_counts(receipt: dict[str, Any], device_id: str) -> dict[str, int]:
    """Kernel -> executions on ``device_id`` per run, from a receipt dict."""
    counts: Counter[str] = Counter()
    for op in receipt["ops"]:
        if op["device"] == device_id:
            counts[op["op"]] += op["count"]
    return dict(counts)


def host_ops(receipt: dict[str, Any], device_id: str) -> dict[tuple[str, str], int]:
    """(kernel, reason) -> count for ops the receipt places off ``device_id``."""
    counts: Counter[tuple[str, str]] = Counter()
    for op in receipt["ops"]:
        if op["device"] != device_id:
            counts[(op["op"], op["reason"])] += op["count"]
    return dict(counts)


def check_receipt_against_trace(entry: dict[str, Any], device_id: str) -> None:
    """The receipt's on-device kernels are exactly what the device traced for one run, no more, no less.

    The simulated device traces only its own kernels (not Paddle's generic
    CUSTOM ones such as reshape), so the comparison is over :data:`KERNELS`.
    """
    receipt = entry["receipt"]
    assert receipt["ops_known"], receipt["evidence"]
    on_device = {k: n for k, n in device_counts(receipt, device_id).items() if k in KERNELS}
    assert on_device == entry["trace"], (on_device, entry["trace"])
    traced_on_host = {op for (op, _why) in host_ops(receipt, device_id)} & set(entry["trace"])
    for op in traced_on_host:  # a kernel both on the host and traced: counts above already cover it
        assert on_device.get(op) == entry["trace"][op]
