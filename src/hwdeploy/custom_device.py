"""Paddle CustomDevice backends (Huawei Ascend ``npu``, Cambricon ``mlu``, ...): what their plugins share.

Paddle runs on such accelerators through a vendor *CustomDevice plugin*: a
shared library that Paddle loads from ``$CUSTOM_DEVICE_ROOT`` (else
``site-packages/paddle_custom_device/``) when it is first imported, and that
registers a device type (``"npu"``) plus kernels for it. Paddle Inference then
runs a model there with ``Config.enable_custom_device(type, id)``; every op
without a kernel on the device falls back to the CPU *silently*.

A vendor plugin describes its device with a :class:`CustomDeviceVendor` and
takes its hooks from it (pluggy finds a plugin's hooks as its module's attributes)::

    ACME = CustomDeviceVendor(kind="npu", vendor="Acme", visible_env="ACME_VISIBLE_DEVICES",
                              smi="acme-smi", install_hint="pip install paddle-custom-acme")

    globals().update(ACME.hookimpls())  # hwdeploy_discover_devices, hwdeploy_create_predictor, ...

A plugin that needs more can write any hook itself instead, forwarding to the
same methods (``ACME.discover()``, ``ACME.create_predictor(model, device, options)``, ...).

What this module adds on top of Paddle:

- **Discovery** in a child process (:func:`registered_custom_devices`), so a
  broken plugin library cannot take the caller down, and so that the
  caller never imports Paddle; cached, keyed by the plugin libraries on disk
  and the visible-devices variables.
- **Never an abort**: ``enable_custom_device`` with a type Paddle has not
  registered aborts the process, so the type and index are checked in the
  creating process first.
- **Per-op placement** in the receipt, read from Paddle's own kernel program
  (the PIR interpreter prints it at ``VLOG(2)`` when the program is built, on
  the first run) and checked against the registered-kernel inventory, so each
  op that ran on the CPU is labelled :data:`~hwdeploy.contract.receipt.NO_KERNEL`,
  :data:`~hwdeploy.contract.receipt.CARRIED_PLACEMENT` or
  :data:`~hwdeploy.contract.receipt.FORCED_OFF` (``CUSTOM_DEVICE_BLACK_LIST``). This is
  done once, at creation, with a warm-up run; ``run()`` pays nothing for it.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import site
import subprocess
import sys
import sysconfig
import tempfile
import threading
from collections import Counter
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

import numpy as np

from hwdeploy.sdk import paddle_inference as pi
from hwdeploy.contract.records import Device
from hwdeploy.errors import BackendError, ConversionError, DeviceNotFoundError, OptionError
from hwdeploy.sdk.options import check_options
from hwdeploy.contract.hookspecs import hookimpl
from hwdeploy.sdk.isolation import run_probe
from hwdeploy.contract.model import Model, TensorSpec
from hwdeploy.contract.receipt import CARRIED_PLACEMENT, FORCED_OFF, NO_KERNEL, OpPlacement, Receipt
from hwdeploy.contract.records import ConversionTarget

BACKEND = pi.BACKEND
#: Paddle's variable naming kernels that must not run on a custom device (comma-separated kernel names).
BLACK_LIST_ENV = "CUSTOM_DEVICE_BLACK_LIST"
#: How long a discovery result stays valid on disk (it is also keyed by the plugin files and env).
DISCOVERY_TTL = 300.0
SMI_TIMEOUT = 10.0
#: Options ``hwdeploy.predictor`` accepts for a custom device.
OPTIONS = {"threads", "ir_optim", "onednn", "optim_cache", "check_finite", "precision", "warmup_inputs"}

# Kernel-key backends that mean "the host CPU" in Paddle's kernel program.
_HOST_BACKENDS = {"CPU", "ONEDNN"}
# Ops of the kernel program that move or name data rather than compute.
_TRANSFER_KERNELS = {"memcpy_h2d", "memcpy_d2h", "memcpy"}
_PSEUDO_KERNELS = {"data", "feed", "fetch", "shadow_feed", "shadow_feed_tensors"}


# ---------------------------------------------------------------------------------------------- discovery


def plugin_search_dirs() -> list[Path]:
    """The directories Paddle loads CustomDevice plugin libraries from, as it will on import.

    ``$CUSTOM_DEVICE_ROOT`` when set (and only it), else every
    ``site-packages/paddle_custom_device`` (where vendor wheels install).
    """
    root = os.environ.get("CUSTOM_DEVICE_ROOT")
    if root:
        return [Path(root)]
    sites = [sysconfig.get_paths().get("purelib"), sysconfig.get_paths().get("platlib")]
    with contextlib.suppress(AttributeError):
        sites += site.getsitepackages()
    dirs: list[Path] = []
    for entry in sites:
        if entry and (Path(entry) / "paddle_custom_device") not in dirs:
            dirs.append(Path(entry) / "paddle_custom_device")
    return dirs


def plugin_libraries() -> list[Path]:
    """The ``.so`` files Paddle would try to load as CustomDevice plugins."""
    libs = []
    for directory in plugin_search_dirs():
        with contextlib.suppress(OSError):
            libs += sorted(p for p in directory.iterdir() if p.suffix == ".so" and p.is_file())
    return libs


def _fingerprint() -> list[Any]:
    # What decides Paddle's answer: which libraries, which versions of them, which devices are visible.
    libs = []
    for lib in plugin_libraries():
        with contextlib.suppress(OSError):
            stat = lib.stat()
            libs.append([str(lib), stat.st_size, stat.st_mtime_ns])
    visible = {k: v for k, v in sorted(os.environ.items()) if k.endswith("VISIBLE_DEVICES")}
    return [libs, visible]


@dataclass
class CustomDeviceProbe:
    """What Paddle reports about CustomDevice plugins in a fresh process."""

    ok: bool
    types: dict[str, int] = field(default_factory=dict)  # device type -> visible device count
    error: str = ""
    libraries: list[str] = field(default_factory=list)
    search_dirs: list[str] = field(default_factory=list)


def registered_custom_devices(*, refresh: bool = False, timeout: float = 60.0) -> CustomDeviceProbe:
    """The custom device types Paddle registers here and how many devices each has.

    Runs ``import paddle`` in a child process (honouring ``CUSTOM_DEVICE_ROOT``)
    and caches the answer, keyed by the plugin libraries and the
    ``*_VISIBLE_DEVICES`` variables. Never raises; ``ok=False`` says why.
    """
    libraries = [str(p) for p in plugin_libraries()]
    dirs = [str(p) for p in plugin_search_dirs()]
    result = run_probe("hwdeploy.custom_device:_probe_registered", [_fingerprint()], timeout=timeout,
                       cache_ttl=0.0 if refresh else DISCOVERY_TTL, cache_env=["CUSTOM_DEVICE_ROOT"])
    if not result.ok:
        error = result.error
        if result.crashed:
            error += " (a CustomDevice plugin library may have crashed Paddle on import: " + ", ".join(libraries) + ")"
        return CustomDeviceProbe(False, error=error, libraries=libraries, search_dirs=dirs)
    return CustomDeviceProbe(True, {t: int(n) for t, n in result.value["types"].items()}, libraries=libraries,
                             search_dirs=dirs)


def _probe_registered(_fingerprint: Any = None) -> dict[str, Any]:
    """(child process) Paddle's registered custom device types and their device counts."""
    pi.inference_module()
    import paddle
    from paddle.base import core

    types = paddle.device.get_all_custom_device_type() or []
    return {"paddle": paddle.__version__, "types": {t: int(core.get_custom_device_count(t)) for t in types}}


@dataclass
class SmiReport:
    """The result of running a vendor management tool (``npu-smi info``, ``cnmon info``)."""

    tool: str
    found: bool
    ok: bool = False
    output: str = ""
    error: str = ""

    def summary(self) -> str:
        if not self.found:
            return f"{self.tool} not found on PATH"
        if not self.ok:
            return f"{self.tool} failed: {self.error}"
        return f"{self.tool} ran"


def run_smi(argv: Sequence[str], timeout: float | None = None) -> SmiReport:
    """Run a vendor tool with a timeout (default :data:`SMI_TIMEOUT`); a missing, failing or hanging tool is
    reported, never raised."""
    timeout = SMI_TIMEOUT if timeout is None else timeout
    tool = argv[0]
    path = shutil.which(tool)
    if path is None:
        return SmiReport(tool, False)
    try:
        done = subprocess.run([path, *argv[1:]], capture_output=True, text=True, timeout=timeout,
                              stdin=subprocess.DEVNULL, errors="replace")
    except subprocess.TimeoutExpired:
        return SmiReport(tool, True, error=f"timed out after {timeout:g}s")
    except OSError as exc:
        return SmiReport(tool, True, error=str(exc))
    if done.returncode != 0:
        last = (done.stderr.strip() or done.stdout.strip()).splitlines()[-1:] or [""]
        return SmiReport(tool, True, error=f"exit status {done.returncode}: {last[0][:200]}", output=done.stdout)
    return SmiReport(tool, True, True, done.stdout)


def visible_device_ids(env_name: str, count: int) -> list[int | None]:
    """Physical id of each of the ``count`` visible devices under ``env_name`` (None where unknown)."""
    value = os.environ.get(env_name)
    if value is None:
        return list(range(count))
    ids: list[int | None] = []
    for item in value.split(","):
        item = item.strip()
        if not item.isdigit():
            break
        ids.append(int(item))
    return (ids + [None] * count)[:count]


# ---------------------------------------------------------------------------------------------- kernel program


@dataclass(frozen=True)
class KernelRecord:
    """One kernel of Paddle's kernel program: op, phi kernel name, kernel-key backend and dtype."""

    op: str  # "pd_op.relu_"
    kernel: str  # "relu"
    backend: str  # "npu", "CPU", "CUSTOM", "ONEDNN", "Undefined"
    dtype: str  # "float32"


_BANNER = "The network executed by pir interpreter"
_KERNEL_LINE = re.compile(r'"(?P<name>[\w.]+)\((?:phi_kernel|legacy_kernel)\)"')
_KEY = re.compile(r"kernel_key:<backend:(?P<backend>\w+)\|layout:[^|>]*\|dtype:(?P<dtype>\w+)>")
_ATTR_STR = r'{}:"(?P<value>[\w.]+)"'


def parse_kernel_program(text: str) -> list[KernelRecord] | None:
    """The kernels in Paddle's kernel-program dump (``VLOG(2)`` of ``pir_interpreter``); None if none was printed."""
    if _BANNER not in text:
        return None
    records = []
    for line in text.splitlines():
        match = _KERNEL_LINE.search(line)
        if not match:
            continue
        key = _KEY.search(line)
        kernel = re.search(_ATTR_STR.format("kernel_name"), line)
        op = re.search(_ATTR_STR.format("op_name"), line)
        name = match["name"]
        records.append(KernelRecord(op=op["value"] if op else name,
                                    kernel=kernel["value"] if kernel else name.rstrip("_"),
                                    backend=key["backend"] if key else "Undefined",
                                    dtype=key["dtype"] if key else ""))
    return records


_inventory: dict[str, list[tuple[str, str, str]]] | None = None
_KEY_ENTRY = re.compile(r"^\((?P<backend>[^,]+), (?P<layout>.*), (?P<dtype>[^,]+)\)$")


def kernel_inventory() -> dict[str, list[tuple[str, str, str]]]:
    """Paddle's registered phi kernels in this process: name -> [(backend, layout, dtype)].

    Read from ``paddle.base.core._get_registered_phi_kernels`` (private; pinned
    and tested per Paddle version). Plugins' kernels are registered when Paddle
    is imported, so this never changes afterwards and is read once.
    """
    global _inventory
    if _inventory is None:
        from paddle.base import core

        table: dict[str, list[tuple[str, str, str]]] = {}
        for name, keys in core._get_registered_phi_kernels("function").items():
            parsed = []
            for key in keys:
                m = _KEY_ENTRY.match(key.strip())
                if m:
                    parsed.append((m["backend"].strip(), m["layout"].strip(), m["dtype"].strip()))
            table[name] = parsed
        _inventory = table
    return _inventory


def device_kernels(device_type: str, inventory: dict[str, list[tuple[str, str, str]]] | None = None) -> dict[str, set[str]]:
    """Kernels the device type has: name -> dtypes, its own plus Paddle's generic ``CUSTOM`` ones."""
    inventory = kernel_inventory() if inventory is None else inventory
    out: dict[str, set[str]] = {}
    for name, keys in inventory.items():
        dtypes = {dtype for backend, _layout, dtype in keys if backend in (device_type, "CUSTOM")}
        if dtypes:
            out[name] = dtypes
    return out


def black_list() -> set[str]:
    """Kernel names ``CUSTOM_DEVICE_BLACK_LIST`` keeps off custom devices."""
    return {name.strip() for name in os.environ.get(BLACK_LIST_ENV, "").split(",") if name.strip()}


@dataclass
class Placement:
    """Where each kernel of a model's program runs, with the reason for every one off the device."""

    device_id: str  # the device asked for, e.g. "npu:0"
    ops: list[OpPlacement] = field(default_factory=list)
    transfers: dict[str, int] = field(default_factory=dict)  # memcpy_h2d/d2h per run
    evidence: list[str] = field(default_factory=list)
    known: bool = True

    @property
    def on_device(self) -> int:
        return sum(op.count for op in self.ops if op.device == self.device_id)

    @property
    def actual(self) -> str:
        """The device the program really uses: the requested one if any kernel runs there, else the CPU."""
        if not self.known or self.on_device or not self.ops:
            return self.device_id
        return "cpu:0"

    def off_device(self) -> dict[str, int]:
        """Kernel name -> count, for kernels that run on the host."""
        counts: Counter[str] = Counter()
        for op in self.ops:
            if op.device != self.device_id:
                counts[op.op] += op.count
        return dict(counts)

    def to_dict(self) -> dict[str, Any]:
        return {"device_id": self.device_id, "ops": [op.__dict__ for op in self.ops], "transfers": self.transfers,
                "evidence": self.evidence, "known": self.known}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "Placement":
        return cls(data["device_id"], [OpPlacement(**op) for op in data["ops"]], dict(data["transfers"]),
                   list(data["evidence"]), bool(data["known"]))


def classify(records: list[KernelRecord], device_type: str, device_id: str,
             kernels: dict[str, set[str]], blocked: set[str]) -> Placement:
    """Turn the kernel program into per-op placement, labelling each host op with why it is there.

    - :data:`FORCED_OFF`: ``CUSTOM_DEVICE_BLACK_LIST`` names the kernel;
    - :data:`NO_KERNEL`: the device registers no kernel of that name and dtype;
    - :data:`CARRIED_PLACEMENT`: it does, but Paddle placed the op on the CPU
      because its input was already there (PIR picks the backend from the
      input's place: one op without a kernel drags its successors along).
    """
    counts: Counter[tuple[str, str, str]] = Counter()
    transfers: Counter[str] = Counter()
    for record in records:
        if record.kernel in _PSEUDO_KERNELS or record.op.startswith("builtin."):
            continue
        if record.kernel in _TRANSFER_KERNELS:
            transfers[record.kernel] += 1
            continue
        backend = record.backend
        if backend == device_type or backend == "CUSTOM":
            counts[(record.kernel, device_id, "")] += 1
        elif backend in _HOST_BACKENDS:
            if record.kernel in blocked:
                reason = FORCED_OFF
            elif record.dtype not in kernels.get(record.kernel, ()):
                reason = NO_KERNEL
            else:
                reason = CARRIED_PLACEMENT
            counts[(record.kernel, "cpu:0", reason)] += 1
        else:  # another backend (GPU...) or Undefined: not the device
            counts[(record.kernel, backend.lower(), f"kernel backend {backend}")] += 1
    ops = [OpPlacement(op, dev, n, reason) for (op, dev, reason), n in sorted(counts.items())]
    placement = Placement(device_id, ops, dict(sorted(transfers.items())))
    host = placement.off_device()
    placement.evidence.append(
        f"Paddle kernel program (pir_interpreter, first run): {placement.on_device} kernel(s) on {device_id}"
        f" ({device_type} backend), {sum(host.values())} on the host"
        + (": " + ", ".join(f"{k} x{n}" if n > 1 else k for k, n in sorted(host.items())) if host else ""))
    if transfers:
        placement.evidence.append("host<->device copies per run: "
                                  + ", ".join(f"{k} x{n}" for k, n in sorted(transfers.items())))
    if blocked:
        placement.evidence.append(f"{BLACK_LIST_ENV}={','.join(sorted(blocked))}")
    return placement


# ---------------------------------------------------------------------------------------------- capture

_capture_lock = threading.RLock()
_GLOG_PROBLEM = re.compile(r"^[WEF]\d{4} ")


@contextlib.contextmanager
def _capture_fds(sink: list[str]) -> Iterator[None]:
    """Capture the process's fd 1 and fd 2 (Paddle's C++ output) into ``sink``.

    Paddle's glog warnings/errors seen meanwhile are written back to stderr so
    nothing the user should see is swallowed.
    """
    sys.stdout.flush()
    sys.stderr.flush()
    with tempfile.TemporaryFile(mode="w+b") as tmp:
        saved = [os.dup(1), os.dup(2)]
        try:
            os.dup2(tmp.fileno(), 1)
            os.dup2(tmp.fileno(), 2)
            yield
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os.dup2(saved[0], 1)
            os.dup2(saved[1], 2)
            for fd in saved:
                os.close(fd)
            tmp.seek(0)
            text = tmp.read().decode(errors="replace")
            sink.append(text)
            problems = [line for line in text.splitlines() if _GLOG_PROBLEM.match(line)]
            if problems:
                sys.stderr.write("\n".join(problems) + "\n")


@contextlib.contextmanager
def _kernel_program_dump() -> Iterator[None]:
    """Turn on the PIR interpreter's kernel-program dump (``VLOG(2)``) for the duration.

    Uses ``core.set_vlog_level`` (the ``GLOG_vmodule`` variable makes Paddle
    3.3.1 hang at exit). glog binds each VLOG site to a module level the first
    time it runs, which is why :func:`hwdeploy.sdk.paddle_inference.inference_module`
    registers ``pir_interpreter`` right after importing Paddle.
    """
    from paddle.base import core

    core.set_vlog_level({"pir_interpreter": 2})
    try:
        yield
    finally:
        core.set_vlog_level({"pir_interpreter": 0})


def sample_inputs(specs: Sequence[TensorSpec]) -> list[np.ndarray]:
    """Deterministic warm-up inputs for ``specs``: dynamic dims = 1, floats ~U(-1, 1), integers 0."""
    rng = np.random.default_rng(0)
    arrays = []
    for spec in specs:
        shape = tuple(d if d > 0 else 1 for d in spec.shape)
        dtype = np.dtype(spec.dtype or "float32")
        if dtype.kind == "f":
            arrays.append(rng.uniform(-1, 1, shape).astype(dtype))
        else:
            arrays.append(np.zeros(shape, dtype))
    return arrays


# ---------------------------------------------------------------------------------------------- predictor


class CustomDevicePredictor(pi.PaddleInferencePredictor):
    """A Paddle Inference predictor on a custom device, with per-op placement in its receipt.

    Create it with :func:`create_custom_device_predictor`.
    """

    placement: Placement
    device_type: str = ""

    def _receipt(self) -> Receipt:
        receipt = super()._receipt()
        placement = self.placement
        receipt.evidence.append(f"paddle.inference.Config.enable_custom_device({self.device_type!r},"
                                f" {self._requested_device.index})")
        receipt.evidence.extend(placement.evidence)
        if placement.known:
            receipt.ops = [OpPlacement(op.op, op.device, op.count, op.reason) for op in placement.ops]
            receipt.ops_known = True
            if placement.actual != placement.device_id:
                # Nothing ran on the device, so no op is "off" the actual device: say why each left it.
                why: Counter[tuple[str, str]] = Counter()
                for op in placement.ops:
                    why[(op.op, op.reason)] += op.count
                receipt.fallback_evidence.append(
                    f"no kernel ran on {placement.device_id}; on the host: "
                    + ", ".join(f"{name} ({reason})" + (f" x{n}" if n > 1 else "")
                                for (name, reason), n in sorted(why.items())))
        else:
            receipt.fallback_evidence.append(
                "per-op placement could not be read from Paddle's kernel program, so execution on "
                f"{self._requested_device.id} is unverified")
        return receipt


def ensure_registered(device_type: str, index: int) -> None:
    """Raise :class:`DeviceNotFoundError` unless Paddle *in this process* has ``device_type:index``.

    ``Config.enable_custom_device`` with an unregistered type aborts the
    process, and Paddle loads plugins only at its first import, so discovery
    (a child process) is not enough: the environment may have changed since.
    """
    pi.inference_module()
    import paddle
    from paddle.base import core

    types = paddle.device.get_all_custom_device_type() or []
    if device_type not in types:
        raise DeviceNotFoundError(
            f"Paddle in this process has no {device_type!r} CustomDevice plugin (registered: {types or 'none'}). "
            f"Paddle loads plugins once, when it is first imported, from CUSTOM_DEVICE_ROOT "
            f"(={os.environ.get('CUSTOM_DEVICE_ROOT', 'unset')}) or site-packages/paddle_custom_device: set it "
            f"before anything imports paddle")
    count = int(core.get_custom_device_count(device_type))
    if not 0 <= index < count:
        raise DeviceNotFoundError(f"Paddle's {device_type!r} plugin has {count} visible device(s);"
                                  f" {device_type}:{index} does not exist")


def create_custom_device_predictor(model: Model, device: Device, device_type: str, *, threads: int | None = None,
                                   ir_optim: bool = True, onednn: bool = False, optim_cache: bool = True,
                                   check_finite: bool = True, warmup_inputs: Sequence[np.ndarray] | None = None,
                                   options: dict[str, Any] | None = None,
                                   placement_fallback: bool = True) -> CustomDevicePredictor:
    """A Paddle Inference predictor on ``device_type:device.index`` whose receipt has per-op placement.

    Builds the config like the CPU reference (IR optimisation, optimized-program
    cache) plus ``enable_custom_device``; oneDNN is off by default (it only
    affects ops that fall back). Creates the predictor and does one warm-up run
    on ``warmup_inputs`` (default: :func:`sample_inputs` of the input specs)
    while capturing the kernel program Paddle builds on that first run. If
    this process ran Paddle's interpreter before hwdeploy could turn that dump
    on, the placement is read in a fresh process (``placement_fallback``).
    """
    ensure_registered(device_type, device.index)
    config = pi.make_config(model, threads=threads, ir_optim=ir_optim, onednn=onednn, optim_cache=optim_cache,
                            cache_tag=("custom_device", device_type, device.index))
    config.enable_custom_device(device_type, device.index)
    holder: dict[str, str] = {"actual": device.id}
    with _capture_lock:
        creation: list[str] = []
        with _kernel_program_dump(), _capture_fds(creation):
            paddle_predictor = pi.create_paddle_predictor(config)
        predictor = CustomDevicePredictor(model, device, config, paddle_predictor=paddle_predictor,
                                          actual_device=lambda _config: holder["actual"], options=options,
                                          check_finite=check_finite)
        predictor.device_type = device_type
        arrays = (predictor.prepare_inputs(list(warmup_inputs), {}) if warmup_inputs is not None
                  else sample_inputs(predictor.inputs))
        first_run: list[str] = []
        with _kernel_program_dump(), _capture_fds(first_run):
            try:
                predictor._run(arrays)
            except BackendError as exc:
                raise BackendError(f"warm-up run on {device.id} failed ({exc}); pass warmup_inputs=[...] with"
                                   " inputs the model accepts") from exc
    records = parse_kernel_program(first_run[0])
    kernels = device_kernels(device_type)
    source = "this process"
    if records is None and not placement_fallback:
        placement = Placement(device.id, known=False, evidence=["Paddle printed no kernel program"])
    elif records is None:
        # Paddle's interpreter ran before hwdeploy could enable the dump (glog binds each VLOG site once):
        # read the same program, same config, in a fresh process instead.
        placement = _placement_in_child(model, device, device_type, dict(threads=threads, ir_optim=ir_optim,
                                        onednn=onednn, optim_cache=optim_cache), arrays)
        source = "a fresh process (this one ran Paddle before the kernel-program dump could be enabled)"
    else:
        placement = classify(records, device_type, device.id, kernels, black_list())
    folded = parse_kernel_program(creation[0]) or []
    if folded:
        host = sum(1 for r in folded if r.backend in _HOST_BACKENDS)
        placement.evidence.append(f"{len(folded)} kernel(s) ran once while optimising the program (constant"
                                  f" folding), {host} of them on the host; not part of a run")
    placement.evidence.append(f"placement read in {source}")
    predictor.placement = placement
    holder["actual"] = placement.actual
    if placement.actual != device.id:
        predictor.device = Device("cpu", 0, name=f"cpu (fallback from {device.id})", backend=device.backend,
                                  plugin=device.plugin)
    return predictor


def _placement_in_child(model: Model, device: Device, device_type: str, config_kwargs: dict[str, Any],
                        arrays: list[np.ndarray]) -> Placement:
    with tempfile.TemporaryDirectory(prefix="hwdeploy-placement-") as tmp:
        inputs = Path(tmp) / "inputs.npz"
        np.savez(inputs, *arrays)
        result = run_probe("hwdeploy.custom_device:_placement_probe",
                           [str(model.program), str(model.params) if model.params else None, model.format,
                            device_type, device.index, config_kwargs, str(inputs)], timeout=300)
    if not result.ok:
        return Placement(device.id, known=False, evidence=[f"kernel-program probe failed: {result.error}"])
    return Placement.from_dict(result.value)


def _placement_probe(program: str, params: str | None, fmt: str, device_type: str, index: int,
                     config_kwargs: dict[str, Any], inputs_path: str) -> dict[str, Any]:
    """(child process) Build the predictor like the parent and return the classified kernel program."""
    model = Model(Path(program), Path(params) if params else None, fmt)  # type: ignore[arg-type]
    with np.load(inputs_path) as data:
        arrays = [data[f"arr_{i}"] for i in range(len(data.files))]
    device = Device(device_type, index)
    predictor = create_custom_device_predictor(model, device, device_type, warmup_inputs=arrays,
                                               placement_fallback=False, **config_kwargs)
    placement = predictor.placement
    placement.evidence = [e for e in placement.evidence if not e.startswith("placement read in")]
    return placement.to_dict()


# ---------------------------------------------------------------------------------------------- utilisation


class SmiSampler:
    """Samples a device's busy percentage by running a vendor tool periodically (a thread)."""

    def __init__(self, argv: Sequence[str], pattern: str, interval: float = 0.2, timeout: float = 5.0):
        self.argv = list(argv)
        self.pattern = re.compile(pattern)
        self.interval = interval
        self.timeout = timeout
        self._values: list[float] = []
        self._errors: list[str] = []
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def sample_once(self) -> float | None:
        """One reading, 0..1, or None (recorded in ``errors``) when the tool fails or prints no match."""
        report = run_smi(self.argv, self.timeout)
        match = self.pattern.search(report.output) if report.ok else None
        if match is None:
            self._errors.append(report.error or f"no match for {self.pattern.pattern!r} in {self.argv[0]} output")
            return None
        return float(match.group(1)) / 100.0

    def _loop(self) -> None:
        while not self._stop.is_set():
            value = self.sample_once()
            if value is not None:
                self._values.append(value)
            self._stop.wait(self.interval)

    def start(self) -> None:
        self._stop.clear()
        self._values, self._errors = [], []
        self._thread = threading.Thread(target=self._loop, name=f"hwdeploy-{self.argv[0]}", daemon=True)
        self._thread.start()

    def stop(self) -> dict[str, Any]:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(self.timeout + self.interval + 1)
        values = self._values
        return {"samples": len(values), "mean_busy": float(np.mean(values)) if values else 0.0,
                "max_busy": max(values) if values else 0.0, "tool": " ".join(self.argv),
                "errors": sorted(set(self._errors))[:5]}


# ---------------------------------------------------------------------------------------------- vendor


@dataclass(frozen=True)
class CustomDeviceVendor:
    """One vendor's Paddle CustomDevice, described once; its plugin's hooks forward to these methods."""

    kind: str  # hwdeploy device kind, also Paddle's device type unless ``paddle_type`` says otherwise
    vendor: str  # "Huawei Ascend"
    visible_env: str  # the runtime's visible-devices variable
    smi: str  # vendor management tool on PATH ("npu-smi")
    install_hint: str  # how to get Paddle's plugin for this device (discovery adds the CUSTOM_DEVICE_ROOT way)
    smi_info_args: tuple[str, ...] = ("info",)
    #: argv (``{card}`` = physical id) and regex (group 1 = busy %) of a utilisation reading.
    smi_usage_args: tuple[str, ...] = ()
    smi_usage_pattern: str = ""
    lite_target: str = ""  # the Paddle Lite NNAdapter target for this device, if any
    paddle_type: str = ""
    priority: int = 90

    @property
    def device_type(self) -> str:
        return self.paddle_type or self.kind

    # ---- discovery
    def discover(self) -> list[Device]:
        """The devices Paddle's plugin for this type reports, or one absent entry saying why."""
        version = pi.paddle_version()
        smi = run_smi([self.smi, *self.smi_info_args])
        visible = os.environ.get(self.visible_env)
        details: dict[str, Any] = {"paddle_device_type": self.device_type, "smi": smi.summary(),
                                   self.visible_env: visible}
        if not version:
            return [self._absent("paddlepaddle is not installed (pip install paddlepaddle)", details)]
        probe = registered_custom_devices()
        details.update(plugin_libraries=probe.libraries, plugin_search_dirs=probe.search_dirs)
        if not probe.ok:
            return [self._absent(f"probing Paddle's CustomDevice plugins failed: {probe.error}", details)]
        count = probe.types.get(self.device_type)
        if count is None:
            where = ", ".join(probe.search_dirs) or "nowhere"
            found = ", ".join(Path(p).name for p in probe.libraries) or "no plugin libraries"
            registered = ", ".join(sorted(probe.types)) or "none"
            return [self._absent(
                f"Paddle has no {self.device_type!r} CustomDevice plugin (searched {where}: {found}; registered"
                f" types: {registered}); {smi.summary()}. {self.install_hint}, or set CUSTOM_DEVICE_ROOT to the"
                " directory holding its .so before Paddle is imported", details)]
        if count == 0:
            hidden = f"; {self.visible_env}={visible!r} hides them" if visible is not None else ""
            return [self._absent(f"Paddle's {self.device_type!r} plugin is loaded but reports no visible device"
                                 f"{hidden}; {smi.summary()}", details)]
        versions = {"paddlepaddle": version}
        physical = visible_device_ids(self.visible_env, count)
        return [Device(self.kind, i, name=f"{self.vendor} {self.device_type}:{i} (Paddle CustomDevice)",
                       backend=BACKEND, priority=self.priority, versions=dict(versions),
                       details={**details, "physical_id": physical[i]})
                for i in range(count)]

    def _absent(self, reason: str, details: dict[str, Any]) -> Device:
        return Device(self.kind, 0, name=f"{self.vendor} {self.kind}", backend=BACKEND, available=False,
                      reason=reason, priority=self.priority, details=details)

    # ---- predictor
    def create_predictor(self, model: Model, device: Device, options: dict[str, Any]) -> CustomDevicePredictor | None:
        """A predictor for ``device`` if it is this vendor's, else None (the hook's contract)."""
        if device.kind != self.kind or device.backend != BACKEND:
            return None
        check_options(f"{self.kind} backend", options, OPTIONS)
        precision = options.get("precision", "fp32")
        if precision != "fp32":
            raise OptionError(f"{self.kind} backend: precision {precision!r} is not supported (fp32 only)")
        kwargs = {k: options[k] for k in ("threads", "ir_optim", "onednn", "optim_cache", "check_finite",
                                          "warmup_inputs") if k in options}
        return create_custom_device_predictor(model, device, self.device_type, options=options, **kwargs)

    # ---- utilisation
    def utilization_sampler(self, device: Device, interval: float = 0.2) -> SmiSampler | None:
        """A sampler through the vendor tool, or None when the tool is not on PATH."""
        if device.kind != self.kind or not self.smi_usage_args or shutil.which(self.smi) is None:
            return None
        card = device.details.get("physical_id")
        card = device.index if card is None else card
        argv = [self.smi, *(arg.format(card=card) for arg in self.smi_usage_args)]
        return SmiSampler(argv, self.smi_usage_pattern, interval)

    # ---- the plugin's hooks
    def hookimpls(self) -> dict[str, Callable[..., Any]]:
        """This vendor's five hwdeploy hooks by name, each an ``@hookimpl`` function forwarding to this object.

        A vendor module binds them as its own attributes, where pluggy looks:
        ``globals().update(ACME.hookimpls())``.
        """

        def hwdeploy_discover_devices():
            return self.discover()

        def hwdeploy_create_predictor(model, device, options):
            return self.create_predictor(model, device, options)

        def hwdeploy_utilization_sampler(device):
            return self.utilization_sampler(device)

        def hwdeploy_conversion_targets():
            return self.conversion_targets()

        def hwdeploy_convert_model(model, target, options, output_dir):
            return self.convert_model(target)

        return {hook.__name__: hookimpl(hook) for hook in (
            hwdeploy_discover_devices, hwdeploy_create_predictor, hwdeploy_utilization_sampler,
            hwdeploy_conversion_targets, hwdeploy_convert_model)}

    # ---- Paddle Lite conversion (owned by the arm plugin when it is installed)
    def conversion_targets(self) -> list[ConversionTarget]:
        """The Lite target, declared only where the arm plugin (which converts for it) is absent."""
        if not self.lite_target or lite_plugin_installed():
            return []
        return [ConversionTarget(self.lite_target, f"Paddle Lite NNAdapter .nb for {self.vendor} (needs the arm"
                                 " plugin: pip install hwdeploy-arm, which runs Paddle Lite's opt)",
                                 device_kinds=(self.kind,))]

    def convert_model(self, target: str) -> None:
        """Refuse the Lite target with a clear error when the arm plugin is absent (else leave it to that plugin)."""
        if target == self.lite_target and self.lite_target and not lite_plugin_installed():
            raise ConversionError(
                f"converting for {target!r} needs Paddle Lite's opt, which hwdeploy runs through the arm plugin:"
                " install hwdeploy-arm (pip install hwdeploy-arm; it sets up paddlelite in a CPython <= 3.10"
                f" worker). {self.vendor} devices run Paddle models directly through Paddle Inference"
                f" (device={self.kind!r}) without conversion")
        return None


def lite_plugin_installed() -> bool:
    """Whether an installed plugin named ``arm`` (hwdeploy-arm, Paddle Lite) is registered as an entry point."""
    return any(ep.name == "arm" for ep in metadata.entry_points(group="hwdeploy"))


__all__ = [
    "BACKEND", "BLACK_LIST_ENV", "CustomDevicePredictor", "CustomDeviceProbe", "CustomDeviceVendor", "KernelRecord",
    "Placement", "SmiReport", "SmiSampler", "black_list", "classify", "create_custom_device_predictor",
    "device_kernels", "ensure_registered", "kernel_inventory", "parse_kernel_program", "plugin_libraries",
    "plugin_search_dirs", "registered_custom_devices", "run_smi", "sample_inputs", "visible_device_ids",
]
