"""An OpenVINO compiled model behind the hwdeploy :class:`~hwdeploy.Predictor` interface.

OpenVINO's CPU plugin runs fp32 models in **bf16** by default on CPUs with
AMX/AVX512-BF16 (``INFERENCE_PRECISION_HINT`` defaults to bf16 there; verified
with OpenVINO 2026.4 on this machine: ~4e-3 relative error on MobileNetV2).
That is a silent precision change, so this plugin asks for the precision
explicitly and reads back, from the compiled runtime model, the precision
every layer really runs in. The receipt's ``options["precision"]`` is what ran,
and a mismatch is fallback evidence: a layer in bf16/f16 when fp32 or int8 was
asked, no layer in bf16 when bf16 was asked, no layer in i8/u8 when int8 was
asked (an IR without quantization, or a CPU plugin that kept it in f32).
"""

from __future__ import annotations

import threading
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np

from hwdeploy import Device, Predictor, Receipt
from hwdeploy.sdk.cache import cache_dir
from hwdeploy.errors import BackendError
from hwdeploy.sdk.hostinfo import default_threads, dist_version
from hwdeploy.contract.model import Model, TensorSpec, model_io
from hwdeploy.sdk.onnx_export import narrow_to_export
from hwdeploy.contract.receipt import OpPlacement

BACKEND = "openvino"
#: hwdeploy precision name -> OpenVINO ``INFERENCE_PRECISION_HINT`` (element type name). int8 is in the IR
#: (NNCF's FakeQuantize ops); the layers left unquantized must run in f32, not silently in bf16.
PRECISIONS = {"fp32": "f32", "bf16": "bf16", "int8": "f32"}
_REDUCED = {"bf16", "f16"}
_INTEGER = {"i8", "u8"}
_BOOKKEEPING_LAYERS = {"Const", "Input", "Output", "Parameter", "Result"}
_OV_DTYPES = {"f32": "float32", "f64": "float64", "f16": "float16", "i64": "int64", "i32": "int32", "i8": "int8",
              "u8": "uint8", "boolean": "bool"}

_core = None
_core_lock = threading.Lock()


def ov_core():
    """One ``openvino.Core`` per process (creating one loads the device plugins)."""
    global _core
    with _core_lock:
        if _core is None:
            import openvino

            _core = openvino.Core()
        return _core


def ov_version() -> str:
    """Installed OpenVINO version, "" when absent."""
    return dist_version("openvino")


def bf16_unsupported() -> str:
    """Why the CPU plugin cannot run bf16 here ("" when it can): without AVX512_BF16 or AMX it does not list
    ``BF16`` among its ``OPTIMIZATION_CAPABILITIES`` and compiles every layer in f32 whatever the hint."""
    capabilities = list(ov_core().get_property("CPU", "OPTIMIZATION_CAPABILITIES"))
    if "BF16" in capabilities:
        return ""
    return (f"OpenVINO's CPU plugin has no bf16 on this CPU (OPTIMIZATION_CAPABILITIES={capabilities}): it would"
            " run every layer in fp32")


def _device_id(ov_device: str) -> str:
    """OpenVINO device name ("CPU", "GPU.1") -> hwdeploy id ("cpu:0", "gpu:1")."""
    kind, _, index = ov_device.partition(".")
    return f"{kind.lower()}:{int(index) if index.isdigit() else 0}"


class OvPredictor(Predictor):
    """An OpenVINO ``CompiledModel`` on the CPU plugin with one infer request.

    ``threads`` -> ``INFERENCE_NUM_THREADS``; ``hint`` -> ``PERFORMANCE_HINT``
    (``"latency"``: one stream, the default; ``"throughput"``: several);
    ``cache=True`` keeps OpenVINO's compiled blobs in hwdeploy's cache
    (``CACHE_DIR``), so a second process compiles faster.
    """

    backend = BACKEND

    def __init__(self, model: Model, device: Device, xml_path: Path, *, threads: int | None = None,
                 precision: str = "fp32", hint: str = "latency", cache: bool = True, check_finite: bool = True,
                 options: dict[str, Any] | None = None, conversion: dict[str, Any] | None = None):
        self.model = model
        self.options = dict(options or {})
        self.check_finite = check_finite
        self.threads = threads or default_threads()
        self.precision = precision
        self._requested_device = device
        self._conversion = dict(conversion or {})
        config = {"INFERENCE_NUM_THREADS": self.threads, "PERFORMANCE_HINT": hint.upper(),
                  "INFERENCE_PRECISION_HINT": PRECISIONS[precision]}
        if cache:
            config["CACHE_DIR"] = str(cache_dir("openvino", "blobs"))
        try:
            self._compiled = ov_core().compile_model(str(xml_path), device.kind.upper(), config)
        except Exception as exc:
            raise BackendError(f"OpenVINO could not compile {xml_path.name} for {device.kind.upper()}: {exc}") from exc
        self._request = self._compiled.create_infer_request()
        self.execution_devices = list(self._compiled.get_property("EXECUTION_DEVICES"))
        self.compiled_precision = self._compiled.get_property("INFERENCE_PRECISION_HINT").get_type_name()
        self._layers = self._read_layers()
        self.export_notes: list[str] = []
        self.inputs, self.outputs = self._io_specs()
        actual = self._actual()
        self.device = device if actual == device.id else device.fallback(actual)

    def _read_layers(self) -> Counter:
        """(layer type, runtime precision) -> count, from the compiled (executable) model."""
        counts: Counter = Counter()
        for op in self._compiled.get_runtime_model().get_ordered_ops():
            info = op.get_rt_info()
            layer = info["layerType"].astype(str) if "layerType" in info else op.get_type_name()
            if layer in _BOOKKEEPING_LAYERS:
                continue
            precision = info["runtimePrecision"].astype(str) if "runtimePrecision" in info else ""
            counts[(layer, precision)] += 1
        return counts

    def _io_specs(self) -> tuple[list[TensorSpec], list[TensorSpec]]:
        ports_in, ports_out = self._compiled.inputs, self._compiled.outputs
        specs = model_io(self.model)
        if specs is not None:
            inputs, outputs = specs
            if [s.name for s in inputs] == [p.get_any_name() for p in ports_in] and len(outputs) == len(ports_out):
                inputs, self.export_notes = narrow_to_export(inputs, [self._spec(p).shape for p in ports_in])
                return inputs, list(outputs)
        return [self._spec(p) for p in ports_in], [self._spec(p) for p in ports_out]

    @staticmethod
    def _spec(port) -> TensorSpec:
        shape = tuple(d.get_length() if d.is_static else -1 for d in port.get_partial_shape())
        return TensorSpec(port.get_any_name(), shape, _OV_DTYPES.get(port.get_element_type().get_type_name(), ""))

    def _actual(self) -> str:
        devices = [_device_id(d) for d in self.execution_devices]
        if self._requested_device.id in devices:
            return self._requested_device.id
        return devices[0] if devices else "cpu:0"

    def _run(self, inputs: list[np.ndarray]) -> list[np.ndarray]:
        try:
            # share_inputs: no copy of the (already validated, contiguous) arrays; outputs are copies.
            return list(self._request.infer(dict(enumerate(inputs)), share_inputs=True).to_tuple())
        except Exception as exc:
            raise BackendError(f"OpenVINO inference failed: {str(exc).strip().splitlines()[0][:500]}") from exc

    def _receipt(self) -> Receipt:
        actual = self._actual()
        receipt = Receipt(requested=self._requested_device.id, actual=actual, backend=BACKEND,
                          runtime_versions={"openvino": ov_version(), **{
                              k: str(v) for k, v in self._conversion.items() if k == "paddle2onnx"}},
                          options={k: v for k, v in self.options.items()
                                   if isinstance(v, (str, int, float, bool, type(None)))})
        receipt.evidence.append(f"openvino: compiled_model EXECUTION_DEVICES = {self.execution_devices},"
                                f" INFERENCE_PRECISION_HINT = {self.compiled_precision},"
                                f" INFERENCE_NUM_THREADS = {self.threads}")
        receipt.evidence.extend(self.export_notes)
        if self._conversion:
            receipt.evidence.append(f"converted by paddle2onnx {self._conversion.get('paddle2onnx', '?')} + OpenVINO"
                                    f" {self._conversion.get('openvino', '?')} (IR saved in fp32)")
        if "quantizer" in self._conversion:
            receipt.evidence.append(f"quantized by {self._conversion['quantizer']} ({self._conversion.get('preset')}"
                                    f" preset, overflow fix {self._conversion.get('overflow_fix')}, calibration"
                                    f" sha256 {str(self._conversion.get('calibration_sha256'))[:12]})")
        for (layer, precision), count in sorted(self._layers.items()):
            receipt.ops.append(OpPlacement(f"ov::{layer}" + (f"[{precision}]" if precision else ""), actual, count))
        receipt.ops_known = bool(self._layers)
        receipt.options["precision"] = self.executed_precision()
        receipt.evidence.append(f"precision: {receipt.options['precision']} executed ({self._precision_counts()})")
        receipt.fallback_evidence.extend(self._precision_mismatch())
        return receipt

    def _layers_in(self, precisions: set[str]) -> dict[tuple[str, str], int]:
        return {key: n for key, n in self._layers.items() if key[1] in precisions}

    def executed_precision(self) -> str:
        """What the compiled model really runs: int8 if any layer runs in i8/u8, else bf16 if any does, else fp32."""
        if self._layers_in(_INTEGER):
            return "int8"
        return "bf16" if self._layers_in(_REDUCED) else "fp32"

    def _precision_counts(self) -> str:
        counts = Counter()
        for (_, precision), n in self._layers.items():
            counts[precision or "?"] += n
        return ", ".join(f"{n} layer(s) in {p}" for p, n in sorted(counts.items()))

    def _precision_mismatch(self) -> list[str]:
        asked, hint = self.precision, self.compiled_precision
        reduced = self._layers_in(_REDUCED)
        if asked in ("fp32", "int8") and (hint != "f32" or reduced):
            listed = ", ".join(f"{layer}[{p}] x{n}" for (layer, p), n in sorted(reduced.items()))
            return [f"{asked} was asked but OpenVINO compiled with INFERENCE_PRECISION_HINT={hint}"
                    + (f"; {sum(reduced.values())} layer(s) run in reduced precision: {listed}" if reduced else "")]
        if asked == "bf16" and not reduced:
            return [f"bf16 was asked but no layer runs in bf16 (INFERENCE_PRECISION_HINT={hint}): the CPU plugin"
                    " kept fp32"]
        if asked == "int8" and not self._layers_in(_INTEGER):
            return ["int8 was asked but no layer runs in i8/u8: the model runs in fp32"
                    + ("" if self._conversion.get("fake_quantize_ops") else " (the IR has no FakeQuantize ops)")]
        return []

    def _clone(self) -> "OvPredictor":
        # The compiled model (weights, streams) is shared; each clone has its own infer request.
        clone = object.__new__(type(self))
        clone.__dict__.update(self.__dict__)
        clone._request = self._compiled.create_infer_request()
        return clone

    def close(self) -> None:
        self._request = None
        self._compiled = None
