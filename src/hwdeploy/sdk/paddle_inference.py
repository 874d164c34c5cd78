"""Paddle Inference for plugins: config building and a zero-copy :class:`Predictor`.

Public helper for any plugin whose runtime is Paddle Inference (the CPU
reference, GPU/TensorRT, CustomDevice accelerators). Importing this module does
not import Paddle; the first config built does. Which kernel ran each op is
read with :mod:`hwdeploy.sdk.paddle_kernels`.
"""

from __future__ import annotations

import os
import re
import threading
import warnings
from typing import Any, Callable

import numpy as np

from hwdeploy.sdk import paddle_kernels
from hwdeploy.sdk.cache import cache_dir, cache_key
from hwdeploy.contract.records import Device
from hwdeploy.errors import BackendError, ModelFormatError
from hwdeploy.sdk.options import check_threads
from hwdeploy.sdk.hostinfo import default_threads, paddle_version  # both also public here, as before
from hwdeploy.contract.model import Model, TensorSpec, model_io
from hwdeploy.contract.predictor import Predictor
from hwdeploy.contract.receipt import Receipt

BACKEND = "paddle-inference"
_import_lock = threading.Lock()


def inference_module():
    """``paddle.inference``, imported on first use with Paddle's glog chatter down to errors."""
    with _import_lock:
        os.environ.setdefault("GLOG_minloglevel", "2")
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="No ccache found")  # Paddle warns about its JIT tooling on import
            import paddle.inference

        # Before any interpreter runs: glog binds each VLOG site once, so paddle_kernels can switch
        # the kernel-program dump on later only if its site is registered now.
        paddle_kernels.register_dump_site()
        return paddle.inference


def bf16_unsupported() -> str:
    """Why this CPU cannot run oneDNN's bfloat16 kernels ("" when it can): they need AVX-512 (native bf16 from
    AVX512_BF16 or AMX); without it Paddle silently runs the program in fp32."""
    inference_module()
    import paddle

    core = paddle.base.core
    if core.supports_bfloat16():
        return ""
    avx512 = core.supports_avx512f() if hasattr(core, "supports_avx512f") else False
    return (f"this CPU has no bfloat16 support in oneDNN (Paddle's supports_bfloat16() is False; AVX-512"
            f" {'present' if avx512 else 'absent'}): Paddle would run the program in fp32")


# Paddle 3.3.1 + oneDNN cannot run these PIR ops: create_predictor succeeds, run() fails with
# "ConvertPirAttribute2RuntimeAttribute not support ArrayAttribute<DoubleAttribute>" once onednn_placement_pass
# has moved them to oneDNN. Without that one pass they keep their CPU kernels while oneDNN's fusion passes
# still put the convolutions and matmuls on oneDNN (a 128x128 segmentation head: 13.2 ms with oneDNN off,
# 3.4 ms so, at 1 thread).
ONEDNN_BROKEN_PIR_OPS = frozenset({"pd_op.bilinear_interp", "pd_op.nearest_interp", "pd_op.bicubic_interp",
                                   "pd_op.linear_interp", "pd_op.trilinear_interp"})


#: The pass that moves every op with a oneDNN kernel to oneDNN (the one that trips on ONEDNN_BROKEN_PIR_OPS).
ONEDNN_PLACEMENT_PASS = "onednn_placement_pass"


def onednn_blockers(model: Model) -> list[str]:
    """PIR ops of ``model`` that oneDNN cannot run on this Paddle (empty for legacy programs)."""
    if model.format != "pir":
        return []
    from hwdeploy.sdk.paddle_format import load_pir_program

    return sorted(set(load_pir_program(model.program).op_types()) & ONEDNN_BROKEN_PIR_OPS)


def make_config(model: Model, *, threads: int | None = None, ir_optim: bool = True, onednn: bool | None = None,
                memory_optim: bool | None = None, optim_cache: bool = True, cache_tag: Any = None):
    """A ``paddle.inference.Config`` set up the way the server path should be.

    IR optimisation on (turning it off gives up every graph optimisation),
    oneDNN on (~4.5x faster on MobileNetV2 here); a program with ops oneDNN
    cannot run on this Paddle (:func:`onednn_blockers`) keeps oneDNN without
    its placement pass when ``onednn=None`` (the default) decides, while
    ``onednn=True`` forces the full placement; and an optimized-program
    cache directory keyed by model hash + options. Memory optimisation is on
    for legacy programs only: on Paddle 3.3.1 ``enable_memory_optim`` makes
    ``create_predictor`` fail for PIR programs ("Not find predictor_id 0 and
    pass_name memory_optimize_pass").
    """
    if memory_optim is None:
        memory_optim = model.format == "legacy"
    inference = inference_module()
    config = inference.Config(str(model.program), str(model.params) if model.params else "")
    config.disable_glog_info()
    config.switch_ir_optim(ir_optim)
    check_threads(threads)
    threads = default_threads() if threads is None else threads
    config.set_cpu_math_library_num_threads(threads)
    placement = True
    if onednn is None:
        onednn, placement = True, not onednn_blockers(model)
    if onednn:
        config.enable_onednn()
        if not placement:
            config.delete_pass(ONEDNN_PLACEMENT_PASS)
    else:
        config.disable_onednn()
    if memory_optim:
        config.enable_memory_optim()
    if optim_cache:
        mode = onednn if placement else "onednn-without-placement"
        key = cache_key(model.sha256, threads, ir_optim, mode, memory_optim, cache_tag, paddle_version())
        config.set_optim_cache_dir(str(cache_dir("optim", key)))
    return config


def program_io(model: Model) -> tuple[list[TensorSpec], list[TensorSpec]]:
    """Input/output specs read from the program file: the PIR program's, or the legacy ProgramDesc's feed/fetch vars."""
    specs = model_io(model)
    return specs if specs is not None else _legacy_io(model)


def io_specs(model: Model, predictor) -> tuple[list[TensorSpec], list[TensorSpec]]:
    """Input/output specs of a created predictor (:func:`program_io`, in the predictor's input/output order)."""
    inputs, outputs = program_io(model)
    in_names, out_names = predictor.get_input_names(), predictor.get_output_names()
    by_name = {s.name: s for s in inputs}
    inputs = [by_name.get(n, TensorSpec(n, (), "")) for n in in_names]
    if len(outputs) != len(out_names):
        outputs = [TensorSpec(n, (), "") for n in out_names]
    else:
        outputs = [TensorSpec(n, o.shape, o.dtype) for n, o in zip(out_names, outputs)]
    return inputs, outputs


_PROTO_DTYPES = {0: "bool", 1: "int16", 2: "int32", 3: "int64", 4: "float16", 5: "float32", 6: "float64",
                 20: "uint8", 21: "int8"}


def _legacy_io(model: Model) -> tuple[list[TensorSpec], list[TensorSpec]]:
    from google.protobuf.message import DecodeError
    from paddle.base.proto import framework_pb2

    try:
        program = framework_pb2.ProgramDesc.FromString(model.program.read_bytes())
    except DecodeError as exc:
        raise ModelFormatError(f"{model.program}: corrupt ProgramDesc ({exc})", model.program) from None
    block = program.blocks[0]
    var_types = {}
    for var in block.vars:
        if var.type.type == 7:  # LOD_TENSOR
            # Paddle 3 renamed the field lod_tensor -> dense_tensor (same number, 7).
            tensor_field = "dense_tensor" if "dense_tensor" in var.type.DESCRIPTOR.fields_by_name else "lod_tensor"
            desc = getattr(var.type, tensor_field).tensor
            var_types[var.name] = (_PROTO_DTYPES.get(desc.data_type, ""), tuple(desc.dims))
    feeds, fetches = [], []
    for op in block.ops:
        args = {v.parameter: list(v.arguments) for v in list(op.inputs) + list(op.outputs)}
        attrs = {a.name: a.i for a in op.attrs if a.name == "col"}
        if op.type == "feed":
            name = args["Out"][0]
            feeds.append((attrs.get("col", len(feeds)), name))
        elif op.type == "fetch":
            fetches.append((attrs.get("col", len(fetches)), args["X"][0]))
    inputs = [TensorSpec(n, var_types.get(n, ("", ()))[1], var_types.get(n, ("", ()))[0]) for _, n in sorted(feeds)]
    outputs = [TensorSpec(n, var_types.get(n, ("", ()))[1], var_types.get(n, ("", ()))[0]) for _, n in sorted(fetches)]
    return inputs, outputs


# Paddle's messages for files it cannot parse -> which file is to blame.
_PROGRAM_PARSE_ERRORS = ("program_desc", "json.exception", "Invalid model file")
_PARAMS_PARSE_ERRORS = ("tensor desc", "Deserialize to tensor", "load_combine", "Cannot read")


def create_paddle_predictor(config, model: Model | None = None):
    """``paddle.inference.create_predictor`` with Paddle's exceptions turned into hwdeploy errors.

    A file Paddle cannot parse (something hwdeploy's own checks let through, e.g. a corrupt legacy
    ProgramDesc) becomes :class:`ModelFormatError` naming the file; anything else :class:`BackendError`.
    """
    inference = inference_module()
    if model is not None and model.format == "legacy":
        # What validation cannot prove: the first load on this machine happens in a child process (cached verdict).
        from hwdeploy.sdk import safety_net

        safety_net.check(model, onednn=config.onednn_enabled(), ir_optim=config.ir_optim())
    try:
        return inference.create_predictor(config)
    except Exception as exc:  # Paddle raises RuntimeError/ValueError/... with C++ context
        text = str(exc)
        if model is not None and any(marker in text for marker in _PROGRAM_PARSE_ERRORS):
            raise ModelFormatError(f"{model.program}: Paddle cannot parse the program: {first_line(exc)}",
                                   model.program) from exc
        if model is not None and model.params and any(marker in text for marker in _PARAMS_PARSE_ERRORS):
            raise ModelFormatError(f"{model.params}: Paddle cannot read the parameters: {first_line(exc)}",
                                   model.params) from exc
        raise BackendError(f"Paddle Inference could not load the model: {first_line(exc)}") from exc


_NOISE = ("C++ Traceback", "Error Message", "[Hint", "In user code:", "[operator <", "File \"", "0   ", "1   ")


def first_line(exc: BaseException) -> str:
    """The most informative line of a Paddle exception's text: its ``XxxError: ...`` or ``(Kind) ...`` line
    (Paddle prefixes the reason with "In user code:" and C++ frames), else the first non-noise line."""
    text = str(exc).strip()
    lines = [line.strip() for line in text.splitlines() if line.strip() and not line.strip().startswith("---")]
    meaningful = [line for line in lines if not line.startswith(_NOISE)]
    reasons = [line for line in meaningful if re.match(r"(\w+(Error|Exception)\b|\(\w+\) )", line)]
    return (reasons or meaningful or lines or [type(exc).__name__])[0][:500]


class PaddleInferencePredictor(Predictor):
    """A :class:`Predictor` over a ``paddle.inference`` predictor.

    Handles are looked up once; ``run`` feeds with ``copy_from_cpu`` and reads
    with ``copy_to_cpu``: the only per-call work is Paddle's own.

    ``actual_device`` is a callable returning the device id the runtime really
    uses, read from Paddle's own state (e.g. ``config.use_gpu()``), never from
    what was asked; ``receipt_extra`` lets a plugin add per-op placement.
    """

    backend = BACKEND

    def __init__(self, model: Model, device: Device, config, *, paddle_predictor=None,
                 actual_device: Callable[[Any], str] | None = None,
                 receipt_extra: Callable[[Receipt], None] | None = None, options: dict[str, Any] | None = None,
                 backend: str | None = None, check_finite: bool = True):
        self.model = model
        self.config = config
        self.options = dict(options or {})
        self.notes: list[str] = []  # facts for the receipt's evidence (e.g. why oneDNN is off)
        self.backend = backend or self.backend
        self.check_finite = check_finite
        self._predictor = paddle_predictor if paddle_predictor is not None else create_paddle_predictor(config, model)
        self._actual_device = actual_device or config_device
        self._receipt_extra = receipt_extra
        self.inputs, self.outputs = io_specs(model, self._predictor)
        self._bind_handles()
        actual = self._actual_device(config)
        self.device = device if actual == device.id else device.fallback(actual)
        self._requested_device = device

    def _bind_handles(self) -> None:
        """Look up the input/output handles of ``self._predictor`` once, and the calls ``_run`` makes on them."""
        predictor = self._predictor
        self._in_handles = [predictor.get_input_handle(s.name) for s in self.inputs]
        self._out_handles = [predictor.get_output_handle(n) for n in predictor.get_output_names()]
        # Paddle's copy_from_cpu is a Python wrapper whose only work is an isinstance check that run() has
        # already made (inputs reach _run as checked ndarrays): call the binding under it.
        self._feeds = [getattr(h, "_copy_from_cpu_bind", h.copy_from_cpu) for h in self._in_handles]
        self._fetches = [h.copy_to_cpu for h in self._out_handles]
        self._execute = predictor.run

    def _run(self, inputs: list[np.ndarray]) -> list[np.ndarray]:
        try:
            for feed, array in zip(self._feeds, inputs):
                feed(array)
            self._execute()
            # Inside the wrapper: an output Paddle did not fill raises "Tensor holds no memory" here.
            return [fetch() for fetch in self._fetches]
        except Exception as exc:
            raise BackendError(f"Paddle Inference run failed: {first_line(exc)}") from exc

    def _receipt(self) -> Receipt:
        receipt = Receipt(requested=self._requested_device.id, actual=self._actual_device(self.config),
                          backend=self.backend, runtime_versions={"paddlepaddle": paddle_version()},
                          options=_jsonable(self.options))
        receipt.evidence.append(f"paddle.inference.Config: use_gpu()={self.config.use_gpu()},"
                                f" ir_optim()={self.config.ir_optim()}, onednn_enabled()={self.config.onednn_enabled()}")
        receipt.evidence.extend(self.notes)
        if self._receipt_extra:
            self._receipt_extra(receipt)
        return receipt

    def _clone(self) -> "PaddleInferencePredictor":
        clone = object.__new__(type(self))
        clone.__dict__.update(self.__dict__)
        clone._predictor = self._predictor.clone()
        clone._bind_handles()
        return clone

    def close(self) -> None:
        self._in_handles = self._out_handles = self._feeds = self._fetches = []
        self._execute = _closed
        self._predictor = None


def _closed() -> None:
    raise RuntimeError("the predictor is closed")


def config_device(config) -> str:
    """The device a Paddle Inference config will really run on, as Paddle reports it."""
    if config.use_gpu():
        return f"gpu:{config.gpu_device_id()}"
    if config.use_xpu():
        return "xpu:0"
    return "cpu:0"


def _jsonable(options: dict[str, Any]) -> dict[str, Any]:
    out = {}
    for key, value in options.items():
        out[key] = value if isinstance(value, (str, int, float, bool, type(None), list, dict)) else repr(value)
    return out

