"""An ONNX Runtime session behind the hwdeploy :class:`~hwdeploy.Predictor` interface.

ONNX Runtime silently drops an execution provider it cannot load (asked for
``["CUDAExecutionProvider", "CPUExecutionProvider"]`` without working CUDA,
it runs on the CPU with a UserWarning at most; verified with onnxruntime 1.32).
So after the session is created, the providers it *really* holds
(``session.get_providers()``) and the per-node assignment
(``get_provider_graph_assignment_info()``) are read back into the receipt:
the device that is not really used shows up as ``actual`` and in
``fallback_evidence``, and hwdeploy's fail-closed policy does the rest.
"""

from __future__ import annotations

import warnings
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np

from hwdeploy import Device, Predictor, Receipt
from hwdeploy.errors import BackendError
from hwdeploy.sdk.hostinfo import default_threads, dist_version
from hwdeploy.contract.model import Model, TensorSpec, model_io
from hwdeploy.sdk.onnx_export import narrow_to_export
from hwdeploy.contract.receipt import NO_KERNEL, OpPlacement

BACKEND = "onnxruntime"
#: The execution provider each hwdeploy device kind needs, first in the list ORT is given.
PROVIDERS = {"cpu": "CPUExecutionProvider", "gpu": "CUDAExecutionProvider"}
_EP_DEVICE_KIND = {"CPUExecutionProvider": "cpu", "CUDAExecutionProvider": "gpu", "TensorrtExecutionProvider": "gpu"}
_ORT_DTYPES = {"tensor(float)": "float32", "tensor(double)": "float64", "tensor(float16)": "float16",
               "tensor(int64)": "int64", "tensor(int32)": "int32", "tensor(int16)": "int16", "tensor(int8)": "int8",
               "tensor(uint8)": "uint8", "tensor(bool)": "bool"}


def ort_version() -> str:
    """Installed onnxruntime version (CPU or GPU build), "" when absent."""
    return dist_version("onnxruntime", "onnxruntime-gpu")


class OrtPredictor(Predictor):
    """``onnxruntime.InferenceSession`` over the ONNX file converted from ``model``.

    ``threads`` sets the intra-op pool (inter-op parallelism stays off: these
    are latency-bound single models). ``spinning=False`` stops idle pool
    threads from busy-waiting, kinder to other work on small machines.
    """

    backend = BACKEND

    def __init__(self, model: Model, device: Device, onnx_path: Path, *, threads: int | None = None,
                 spinning: bool = True, check_finite: bool = True, options: dict[str, Any] | None = None,
                 conversion: dict[str, Any] | None = None, precision: str = "fp32"):
        import onnxruntime as ort

        self.precision = precision
        self.model = model
        self.options = dict(options or {})
        self.check_finite = check_finite
        self.threads = threads or default_threads()
        self._requested_device = device
        self._conversion = dict(conversion or {})
        session_options = ort.SessionOptions()
        session_options.intra_op_num_threads = self.threads
        session_options.inter_op_num_threads = 1
        session_options.log_severity_level = 3  # errors only; what matters is read back below
        session_options.add_session_config_entry("session.record_ep_graph_assignment_info", "1")
        if not spinning:
            session_options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        self.requested_providers = self._providers_for(device)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            try:
                self._session = ort.InferenceSession(str(onnx_path), session_options,
                                                     providers=self.requested_providers)
            except Exception as exc:  # ORT raises its own Fail/InvalidGraph/... types
                raise BackendError(f"ONNX Runtime could not load {onnx_path.name}: {exc}") from exc
        self.provider_warnings = [str(w.message) for w in caught]
        self.granted_providers = list(self._session.get_providers())
        self._placement = self._read_placement()
        self.export_notes: list[str] = []
        self.inputs, self.outputs = self._io_specs()
        self._input_names = [i.name for i in self._session.get_inputs()]
        self._output_names = [o.name for o in self._session.get_outputs()]
        actual = self._actual()
        self.device = device if actual == device.id else device.fallback(actual)
        self._onnx_path = Path(onnx_path)
        self._quantized = self._read_quantized()

    def _read_quantized(self) -> tuple[dict[str, int], str]:
        """Quantized nodes (``{op_type: count}``) in the graph the session runs, and where that was read."""
        from hwdeploy_onnxruntime.int8 import count_quantized, onnx_op_counts

        if self._placement:
            by_op: Counter = Counter()
            for (_, op_type), count in self._placement.items():
                by_op[op_type] += count
            return count_quantized(by_op), ("the session's provider assignment (get_provider_graph_assignment_info:"
                                            " the QDQ graph as partitioned, before ORT fuses QDQ groups into"
                                            " QLinear* kernels)")
        return count_quantized(onnx_op_counts(self._onnx_path)), f"the ONNX file {self._onnx_path.name}"

    @staticmethod
    def _providers_for(device: Device) -> list:
        if device.kind == "gpu":
            return [("CUDAExecutionProvider", {"device_id": device.index}), "CPUExecutionProvider"]
        return ["CPUExecutionProvider"]

    def _read_placement(self) -> Counter:
        """(execution provider, ONNX op type) -> node count, as the session assigned them."""
        counts: Counter = Counter()
        try:
            for subgraph in self._session.get_provider_graph_assignment_info():
                for node in subgraph.get_nodes():
                    counts[(subgraph.ep_name, node.op_type)] += 1
        except (AttributeError, RuntimeError):  # older onnxruntime releases have no assignment API
            pass
        return counts

    def _io_specs(self) -> tuple[list[TensorSpec], list[TensorSpec]]:
        session_in, session_out = self._session.get_inputs(), self._session.get_outputs()
        specs = model_io(self.model)
        if specs is not None:
            inputs, outputs = specs
            # paddle2onnx keeps Paddle's feed names; use the Paddle specs when they line up.
            if [s.name for s in inputs] == [i.name for i in session_in] and len(outputs) == len(session_out):
                inputs, self.export_notes = narrow_to_export(inputs, [i.shape for i in session_in])
                return inputs, list(outputs)
        return ([self._spec(i) for i in session_in], [self._spec(o) for o in session_out])

    @staticmethod
    def _spec(arg) -> TensorSpec:
        shape = tuple(d if isinstance(d, int) and d >= 0 else -1 for d in (arg.shape or []))
        return TensorSpec(arg.name, shape, _ORT_DTYPES.get(arg.type, ""))

    def _actual(self) -> str:
        """The device ORT really runs on: the requested one only if its provider is in the session."""
        wanted = PROVIDERS.get(self._requested_device.kind)
        if wanted in self.granted_providers:
            return self._requested_device.id
        return "cpu:0"

    def _run(self, inputs: list[np.ndarray]) -> list[np.ndarray]:
        try:
            return self._session.run(self._output_names, dict(zip(self._input_names, inputs)))
        except Exception as exc:
            raise BackendError(f"ONNX Runtime run failed: {str(exc).strip().splitlines()[0][:500]}") from exc

    def _receipt(self) -> Receipt:
        actual = self._actual()
        receipt = Receipt(requested=self._requested_device.id, actual=actual, backend=BACKEND,
                          runtime_versions={"onnxruntime": ort_version(), **{
                              k: str(v) for k, v in self._conversion.items() if k == "paddle2onnx"}},
                          options={k: v for k, v in self.options.items()
                                   if isinstance(v, (str, int, float, bool, type(None)))})
        receipt.evidence.append(f"onnxruntime: asked for providers {[self._name(p) for p in self.requested_providers]},"
                                f" session.get_providers() = {self.granted_providers}")
        receipt.evidence.append(f"onnxruntime: intra_op_num_threads={self.threads}")
        receipt.evidence.extend(self.export_notes)
        quantized, where = self._quantized
        executed = "int8" if quantized else "fp32"
        receipt.options["precision"] = executed
        total = sum(quantized.values())
        receipt.evidence.append(f"precision: {executed} executed ({total} quantized nodes in {where}"
                                + (f": {', '.join(f'{op} x{n}' for op, n in quantized.items())})" if quantized
                                   else ")"))
        if self.precision == "int8" and not quantized:
            receipt.fallback_evidence.append(
                f"precision='int8' was asked for but the session has no quantized nodes (QuantizeLinear,"
                f" DequantizeLinear, QLinear*, ConvInteger) in {where}: it runs fp32")
        elif self.precision == "fp32" and quantized:
            receipt.fallback_evidence.append(f"precision='fp32' was asked for but the session runs {total}"
                                             f" quantized nodes")
        if self._conversion.get("precision") == "int8":
            c = self._conversion
            receipt.evidence.append(f"quantized by {c.get('quantizer')} ({c.get('format')}, per-channel"
                                    f" {c.get('weights')} weights, {c.get('activations')} activations,"
                                    f" {c.get('calibration_method')} calibration on {c.get('calibration_rows')}"
                                    f" rows, calibration sha256 {str(c.get('calibration_sha256'))[:16]})")
        if self._conversion:
            receipt.evidence.append(f"converted by paddle2onnx {self._conversion.get('paddle2onnx', '?')}"
                                    f" (ONNX opset {self._conversion.get('onnx_opset', '?')},"
                                    f" {self._conversion.get('onnx_nodes', '?')} nodes)")
        wanted = PROVIDERS.get(self._requested_device.kind)
        if wanted not in self.granted_providers:
            receipt.fallback_evidence.append(
                f"asked onnxruntime for {wanted} but the session only has {self.granted_providers}"
                f" (session.get_providers()); onnxruntime fell back silently"
                + (f": {self.provider_warnings[0]}" if self.provider_warnings else ""))
        for (provider, op_type), count in sorted(self._placement.items()):
            where = self._device_of(provider)
            receipt.ops.append(OpPlacement(f"onnx::{op_type}", where, count, "" if where == actual else NO_KERNEL))
        receipt.ops_known = bool(self._placement)
        return receipt

    def _device_of(self, provider: str) -> str:
        kind = _EP_DEVICE_KIND.get(provider)
        if kind == "cpu":
            return "cpu:0"
        if kind:
            return f"{kind}:{self._requested_device.index}"
        return provider

    @staticmethod
    def _name(provider) -> str:
        return provider[0] if isinstance(provider, tuple) else provider

    def _clone(self) -> "OrtPredictor":
        # InferenceSession.run is thread-safe: clones share the session (and its weights).
        clone = object.__new__(type(self))
        clone.__dict__.update(self.__dict__)
        return clone

    def close(self) -> None:
        self._session = None
