"""Tolerance table, vendor config file and expected-failures file.

Nothing here imports Paddle: the orchestrating process reads these before any
worker starts, and records the effective values in the report.
"""

from __future__ import annotations

import fnmatch
import hashlib
import tomllib
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any

PRECISIONS = ("fp32", "fp16", "bf16", "int8")
#: Precisions whose accuracy is judged only on trained models: random weights do not quantize or round like trained
#: ones (measured: MobileNetV2 int8 keeps 6% of fp32's top-1 decisions, a trained classifier 99.4%).
LOW_PRECISIONS = ("bf16", "int8")


@dataclass(frozen=True)
class Tolerance:
    """How far a device's outputs may be from the CPU reference at one precision.

    ``rel_l2``      max ||dev - ref||_2 / ||ref||_2
    ``max_abs``     max normalised max-abs error: max|dev - ref| / max|ref|
    ``cosine``      min cosine similarity of dev and ref (flattened)
    ``top1``        min top-1 agreement over rows of a classifier output (near-ties excluded)
    ``top5``        min mean top-5 overlap over rows of a classifier output
    ``int_match``   min fraction of equal elements of an integer output (argmax maps, ids)
    ``determinism`` max rel-L2 between two runs of the device on the same input
    """

    rel_l2: float
    max_abs: float
    cosine: float
    top1: float
    top5: float
    int_match: float
    determinism: float

    #: Fields where a smaller value is the stricter one (the others: larger is stricter).
    LOWER_BOUNDS = ("cosine", "top1", "top5", "int_match")

    def loosen(self, other: dict[str, float]) -> "Tolerance":
        """The looser of ``self`` and ``other`` field by field (used for per-op overrides)."""
        values = {}
        for name, value in other.items():
            current = getattr(self, name)
            values[name] = min(current, value) if name in self.LOWER_BOUNDS else max(current, value)
        return replace(self, **values)

    def to_dict(self) -> dict[str, float]:
        return asdict(self)


# Per-op references (notes/anchors.md): Paddle OpTest rtol 1e-5 (fp32), 1e-3 (fp16), 1e-2 (bf16);
# torch.testing 1.3e-6 / 1e-3 / 1.6e-2. A whole model accumulates error over tens of ops, so the
# model-level rel-L2 bound is 10x the per-op rtol (5x for bf16); int8 follows MLPerf's "99% of FP32".
DEFAULT_TOLERANCES: dict[str, Tolerance] = {
    "fp32": Tolerance(rel_l2=1e-4, max_abs=5e-4, cosine=0.99999, top1=1.0, top5=0.98, int_match=0.999,
                      determinism=1e-6),
    "fp16": Tolerance(rel_l2=1e-2, max_abs=5e-2, cosine=0.9995, top1=0.99, top5=0.95, int_match=0.99,
                      determinism=1e-3),
    "bf16": Tolerance(rel_l2=5e-2, max_abs=1e-1, cosine=0.998, top1=0.97, top5=0.90, int_match=0.97,
                      determinism=1e-2),
    "int8": Tolerance(rel_l2=1e-1, max_abs=2.5e-1, cosine=0.99, top1=0.90, top5=0.80, int_match=0.90,
                      determinism=1e-2),
}

TOLERANCE_FIELDS = tuple(f.name for f in fields(Tolerance))


class ConfigError(ValueError):
    """A vendor config or expected-failures file that cannot be used (names the file and the key)."""


@dataclass
class CheckSettings:
    """Knobs of the checks (``[checks]`` in the vendor config); defaults suit a lab machine."""

    timeout: float = 300.0  # seconds per check (predictor creation included) before it is "hung"
    setup_timeout: float = 600.0  # seconds for a worker to start: imports, model and reference loading
    examples: int = 8  # Hypothesis examples per model for parity
    seed: int = 0  # Hypothesis seed: same seed, same inputs, same report
    max_restarts: int = 2  # fresh workers per case after a crash/hang before the rest is given up
    reference_threads: int = 1
    unit_scale: tuple[float, float] = (1e-4, 1e4)  # accepted RMS range of a reference output
    perf_seconds: float = 2.0  # TEST01 timed run: at least this long...
    perf_iterations: int = 200  # ...and at least this many runs
    perf_sample_fraction: float = 0.25  # share of timed-run outputs compared against accuracy mode...
    perf_max_samples: int = 256  # ...kept as a uniform reservoir of at most this many
    utilization_seconds: float = 1.0
    min_utilization: float = 0.05  # mean busy fraction below which the device was idle
    timing_pairs: int = 20
    caching_pairs: int = 40  # TEST04: interleaved (repeated input, new input) call pairs...
    caching_max_speedup: float = 1.5  # ...and how much faster the repeated input may run
    timing_cpu_ratio: float = 0.5  # host-CPU seconds per run >= this x the reference's means "computed on the host"
    timing_wall_ratio: float = 0.5  # ...unless the device is more than 1/this faster than the reference
    concurrency_threads: int = 4
    concurrency_runs: int = 4
    lifecycle_cycles: int = 20
    lifecycle_warmup: int = 3
    #: RSS trend bounds: the 99% lower confidence bound of the Theil–Sen slope of RSS over the cycles after
    #: warm-up must not exceed this (MiB per cycle), nor that slope times the measured cycles max_growth_mb.
    lifecycle_max_slope_mb: float = 1.0
    lifecycle_max_growth_mb: float = 64.0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class ModelSettings:
    """``[models.NAME]`` in the vendor config."""

    task: str | None = None
    batch_range: tuple[int, int] | None = None
    dims: int = 8  # size used for dynamic non-batch dimensions of models without sample inputs
    inputs: dict[str, dict[str, Any]] = field(default_factory=dict)  # per input: {"range": [lo, hi]}
    tolerances: dict[str, dict[str, float]] = field(default_factory=dict)  # per precision
    #: A detector's NMS settings (score_threshold, nms_threshold, keep_top_k): what may flip a detection.
    nms: dict[str, float] = field(default_factory=dict)
    #: An .npz of real inputs (relative to the config file's folder).
    inputs_file: str | None = None


@dataclass
class VendorConfig:
    """A vendor's adaptation of the suite, read from TOML (see README "Vendor config")."""

    path: str | None = None
    sha256: str | None = None
    device_options: dict[str, Any] = field(default_factory=dict)
    host_compute: bool | None = None
    tolerances: dict[str, dict[str, float]] = field(default_factory=dict)
    op_tolerances: dict[str, dict[str, dict[str, float]]] = field(default_factory=dict)  # precision -> op -> fields
    models: dict[str, ModelSettings] = field(default_factory=dict)
    checks: CheckSettings = field(default_factory=CheckSettings)

    def model(self, name: str) -> ModelSettings:
        return self.models.get(name, ModelSettings())

    def tolerance(self, precision: str, model: str, ops: list[str] | None = None) -> tuple[Tolerance, list[str]]:
        """The effective tolerance for ``model`` at ``precision`` and where each part came from."""
        if precision not in DEFAULT_TOLERANCES:
            raise ConfigError(f"unknown precision {precision!r}; known: {', '.join(PRECISIONS)}")
        tol = DEFAULT_TOLERANCES[precision]
        sources = [f"default {precision} row"]
        if precision in self.tolerances:
            tol = replace(tol, **self.tolerances[precision])
            sources.append(f"[tolerances.{precision}] {self.tolerances[precision]}")
        for op in sorted(set(ops or ()) & set(self.op_tolerances.get(precision, {}))):
            tol = tol.loosen(self.op_tolerances[precision][op])
            sources.append(f"[tolerances.{precision}.ops] {op!r} {self.op_tolerances[precision][op]}")
        per_model = self.model(model).tolerances.get(precision)
        if per_model:
            tol = replace(tol, **per_model)
            sources.append(f"[models.{model}.tolerances.{precision}] {per_model}")
        return tol, sources

    def to_dict(self) -> dict[str, Any]:
        return {"path": self.path, "sha256": self.sha256, "device_options": self.device_options,
                "host_compute": self.host_compute, "tolerances": self.tolerances,
                "op_tolerances": self.op_tolerances,
                "models": {k: asdict(v) for k, v in self.models.items()}, "checks": self.checks.to_dict()}


def _tolerance_fields(data: Any, where: str) -> dict[str, float]:
    if not isinstance(data, dict):
        raise ConfigError(f"{where}: expected a table of tolerance fields, got {data!r}")
    out = {}
    for key, value in data.items():
        if key not in TOLERANCE_FIELDS:
            raise ConfigError(f"{where}: unknown tolerance field {key!r}; known: {', '.join(TOLERANCE_FIELDS)}")
        if not isinstance(value, (int, float)) or isinstance(value, bool) or value < 0:
            raise ConfigError(f"{where}.{key}: expected a non-negative number, got {value!r}")
        out[key] = float(value)
    return out


#: The NMS attributes detection parity reads ([models.NAME.nms], or the program's NMS op).
NMS_FIELDS = ("score_threshold", "nms_threshold", "keep_top_k")


def _nms_table(data: Any, where: str) -> dict[str, float]:
    if not isinstance(data, dict):
        raise ConfigError(f"{where}: expected a table of NMS settings, got {data!r}")
    for key, value in data.items():
        if key not in NMS_FIELDS:
            raise ConfigError(f"{where}: unknown NMS setting {key!r}; known: {', '.join(NMS_FIELDS)}")
        if not isinstance(value, (int, float)) or isinstance(value, bool):
            raise ConfigError(f"{where}.{key}: expected a number, got {value!r}")
    return dict(data)


def _precision(name: str, where: str) -> str:
    if name not in DEFAULT_TOLERANCES:
        raise ConfigError(f"{where}: unknown precision {name!r}; known: {', '.join(PRECISIONS)}")
    return name


def load_config(path: str | Path | None) -> VendorConfig:
    """Read a vendor config (TOML); ``None`` gives the defaults. Unknown keys are errors, not ignored."""
    if path is None:
        return VendorConfig()
    path = Path(path)
    try:
        raw_bytes = path.read_bytes()
        data = tomllib.loads(raw_bytes.decode())
    except OSError as exc:
        raise ConfigError(f"cannot read vendor config {path}: {exc}") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(f"vendor config {path} is not valid TOML: {exc}") from None
    config = VendorConfig(path=str(path), sha256=hashlib.sha256(raw_bytes).hexdigest())
    unknown = set(data) - {"device", "tolerances", "models", "checks"}
    if unknown:
        raise ConfigError(f"{path}: unknown section(s) {sorted(unknown)}; known: checks, device, models, tolerances")
    device = data.get("device", {})
    unknown = set(device) - {"options", "host_compute"}
    if unknown:
        raise ConfigError(f"{path}: [device] unknown key(s) {sorted(unknown)}; known: host_compute, options")
    config.device_options = dict(device.get("options", {}))
    if "host_compute" in device:
        config.host_compute = bool(device["host_compute"])
    for precision, table in data.get("tolerances", {}).items():
        _precision(precision, f"{path}: [tolerances.{precision}]")
        table = dict(table)
        ops = table.pop("ops", {})
        if table:
            config.tolerances[precision] = _tolerance_fields(table, f"[tolerances.{precision}]")
        for op, op_table in ops.items():
            config.op_tolerances.setdefault(precision, {})[op] = _tolerance_fields(
                op_table, f"[tolerances.{precision}.ops.{op!r}]")
    for name, table in data.get("models", {}).items():
        settings = ModelSettings()
        unknown = set(table) - {"task", "batch_range", "dims", "inputs", "tolerances", "nms", "inputs_file"}
        if unknown:
            raise ConfigError(f"{path}: [models.{name}] unknown key(s) {sorted(unknown)}")
        if "task" in table:
            settings.task = str(table["task"])
        if "batch_range" in table:
            lo, hi = table["batch_range"]
            if not (isinstance(lo, int) and isinstance(hi, int) and 1 <= lo <= hi):
                raise ConfigError(f"{path}: [models.{name}] batch_range must be [min, max] with 1 <= min <= max")
            settings.batch_range = (lo, hi)
        if "dims" in table:
            settings.dims = int(table["dims"])
        settings.inputs = {k: dict(v) for k, v in table.get("inputs", {}).items()}
        settings.nms = _nms_table(table.get("nms", {}), f"{path}: [models.{name}.nms]")
        if "inputs_file" in table:
            if not isinstance(table["inputs_file"], str) or not table["inputs_file"]:
                raise ConfigError(f"{path}: [models.{name}] inputs_file must be a path to an .npz")
            settings.inputs_file = str(Path(path).parent / table["inputs_file"])
        for precision, tol in table.get("tolerances", {}).items():
            _precision(precision, f"{path}: [models.{name}.tolerances.{precision}]")
            settings.tolerances[precision] = _tolerance_fields(tol, f"[models.{name}.tolerances.{precision}]")
        config.models[name] = settings
    checks = data.get("checks", {})
    known = {f.name for f in fields(CheckSettings)}
    unknown = set(checks) - known
    if unknown:
        raise ConfigError(f"{path}: [checks] unknown key(s) {sorted(unknown)}; known: {', '.join(sorted(known))}")
    for key, value in checks.items():
        default = getattr(config.checks, key)
        setattr(config.checks, key, tuple(value) if isinstance(default, tuple) else type(default)(value))
    return config


@dataclass
class ExpectedFailure:
    pattern: str
    reason: str
    line: int


@dataclass
class ExpectedFailures:
    """Check ids (``MODEL/PRECISION/CHECK``, shell wildcards allowed) a device is known to fail.

    File format, one entry per line::

        # device npu:0, firmware 7.1
        resnet18/fp16/parity        # conv2d fp16 accumulates in fp16, ticket NPU-1234
        */int8/*                    # int8 not supported yet
    """

    path: str | None = None
    entries: list[ExpectedFailure] = field(default_factory=list)

    def match(self, check_id: str) -> ExpectedFailure | None:
        for entry in self.entries:
            if fnmatch.fnmatchcase(check_id, entry.pattern):
                return entry
        return None

    def to_dict(self) -> dict[str, Any]:
        return {"path": self.path, "entries": [asdict(e) for e in self.entries]}


def load_expected_failures(path: str | Path | None) -> ExpectedFailures:
    if path is None:
        return ExpectedFailures()
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as exc:
        raise ConfigError(f"cannot read expected-failures file {path}: {exc}") from None
    result = ExpectedFailures(str(path))
    for number, line in enumerate(text.splitlines(), 1):
        body, _, reason = line.partition("#")
        body = body.strip()
        if not body:
            continue
        if len(body.split()) != 1 or body.count("/") != 2:
            raise ConfigError(f"{path}:{number}: expected 'MODEL/PRECISION/CHECK  # reason', got {line.strip()!r}")
        result.entries.append(ExpectedFailure(body, reason.strip(), number))
    return result
