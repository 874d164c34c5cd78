"""``precision="int8"`` on the CPU reference backend: Paddle's own post-training quantization, run on oneDNN int8.

Paddle 3.3 does this on the legacy IR only (measured on this machine with Paddle 3.3.1):

- its static post-training quantization (``paddle.static.quantization.PostTrainingQuantization``) reads legacy
  ``.pdmodel`` programs, with the PIR API off; on a PIR ``.json`` program it fails (an ``AssertionError`` in
  ``paddle/base/framework.py``: it expects a legacy ``Program``);
- oneDNN's int8 passes exist in the legacy IR only: the quantized program under ``enable_new_ir(True)`` fails
  ("Type of attribute: shift is not pir::FloatAttribute"), and on a PIR program ``enable_onednn_int8()`` changes
  nothing (fp32 kernels run).

So the conversion target ``paddle-int8`` quantizes the model's *legacy* export in a child process
(``FLAGS_enable_pir_api=0``; QDQ format, per-channel abs-max weights, abs-max activations, the calibration data
of :mod:`hwdeploy.sdk.calibration`), and the predictor runs it with oneDNN int8 on the legacy IR. What executed
is read back from Paddle itself: a probe run on a clone, with Paddle's per-op output hook, counts the ops whose
outputs are int8/uint8; a run without any is fallback evidence. A model with no legacy export is refused with
the reason above.
"""

from __future__ import annotations

import re
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np

from hwdeploy.contract.model import Model, load_model
from hwdeploy.contract.records import Artifact
from hwdeploy.errors import BackendError, ConversionError, OptionError
from hwdeploy.sdk import calibration
from hwdeploy.sdk import paddle_inference as pi
from hwdeploy.sdk.isolation import run_probe
from hwdeploy.sdk.options import OptionSchema

TARGET = "paddle-int8"
CONVERSION_OPTIONS = OptionSchema("paddle-int8 conversion", calibration.CONVERSION_OPTIONS)
QUANTIZE_TIMEOUT = 900.0
CALIBRATION_BATCH = 16
WHY_LEGACY = ("Paddle 3.3's post-training quantization reads legacy .pdmodel programs only (on a PIR program it"
              " fails), and its oneDNN int8 passes exist in the legacy IR only (on PIR, enable_onednn_int8 runs fp32"
              " kernels)")
_INTEGER_DTYPES = ("paddle.int8", "paddle.uint8")


def legacy_of(model: Model) -> Model:
    """The model's legacy program: itself, or a zoo model's legacy export; else :class:`OptionError` saying why."""
    if model.format == "legacy":
        return model
    name = (model.metadata or {}).get("zoo")
    if name:
        from hwdeploy import zoo

        legacy = zoo.get(name).legacy
        if legacy is not None:
            return legacy
    raise OptionError(f"cpu backend: precision='int8' needs the model as a legacy .pdmodel program (pass it instead of"
                      f" {Path(model.program).name}): {WHY_LEGACY}")


def quantize_in_child(program: str, params: str, calibration_npz: str, names: list[str],
                      output_dir: str) -> dict[str, Any]:
    """Static post-training quantization of a legacy program (runs in the child, PIR API off)."""
    import paddle
    from paddle.static.quantization import PostTrainingQuantization

    paddle.enable_static()
    with np.load(calibration_npz, allow_pickle=False) as data:
        arrays = [data[name] for name in names]
    batches = calibration.batches(names, arrays, CALIBRATION_BATCH)
    ptq = PostTrainingQuantization(
        executor=paddle.static.Executor(paddle.CPUPlace()), model_dir=str(Path(program).parent),
        model_filename=Path(program).name, params_filename=Path(params).name, data_loader=lambda: iter(batches),
        batch_nums=len(batches), algo="abs_max", onnx_format=True, weight_quantize_type="channel_wise_abs_max")
    program_desc = ptq.quantize()
    ptq.save_quantized_model(output_dir, model_filename="model.pdmodel", params_filename="model.pdiparams")
    ops = Counter(op.type for block in program_desc.blocks for op in block.ops)
    return {"paddle": paddle.__version__, "quantize_ops": ops.get("quantize_linear", 0),
            "dequantize_ops": ops.get("dequantize_linear", 0)}


def quantize(model: Model, options: dict[str, Any], output_dir: Path) -> Artifact:
    """The ``paddle-int8`` conversion of a legacy program."""
    settings = CONVERSION_OPTIONS.check(options)
    model = legacy_of(model)  # a zoo model's legacy export; anything else without one is refused with the reason
    names, arrays, sha = calibration.load_checked(model, settings, f"{TARGET} conversion")
    result = run_probe(f"{__name__}:quantize_in_child",
                       [str(model.program), str(model.params), settings["calibration"], names, str(output_dir)],
                       timeout=QUANTIZE_TIMEOUT, env={"FLAGS_enable_pir_api": "0"})
    written = Path(output_dir) / "model.pdmodel"
    if not (result.ok and written.exists()):
        raise ConversionError(f"int8 quantization of {model.name or model.program} failed at step"
                              f" paddle.static.quantization.PostTrainingQuantization (legacy IR, abs_max, QDQ):"
                              f" {result.error or 'no program written'}")
    if not result.value["quantize_ops"]:
        raise ConversionError(f"int8 quantization of {model.name or model.program}: the quantized program has no"
                              " quantize_linear ops")
    facts = {"precision": "int8", "quantizer": f"paddle.static.quantization {result.value['paddle']}",
             "format": "QDQ", "weights": "int8 per channel (abs max)", "activations": "int8 (abs max)",
             "calibration_sha256": sha, "calibration_rows": int(len(arrays[0])), **result.value}
    return Artifact(TARGET, Path(output_dir), ["model.pdmodel", "model.pdiparams"], facts)


def create_predictor(model: Model, device, settings: dict[str, Any], options: dict[str, Any]):
    """A Paddle Inference predictor on the int8 program of ``model`` (oneDNN int8, legacy IR), with its evidence."""
    import hwdeploy
    from hwdeploy import zoo

    legacy = legacy_of(model)
    data = settings["calibration"] if settings["calibration"] is not None else zoo.calibration_of(model)
    conversion = calibration.conversion_options(legacy, data, "cpu backend")
    artifact = hwdeploy.convert(legacy, TARGET, **conversion)
    quantized = load_model((artifact.path("model.pdmodel"), artifact.path("model.pdiparams")))
    quantized.metadata.update({k: v for k, v in (model.metadata or {}).items() if k not in quantized.metadata})

    def make_config():
        # No optimized-program cache: Paddle's cached int8 program is suspected to reload its weights in a layout
        # its oneDNN kernels refuse (see PaddleInt8Predictor); creation costs ~1 s without it.
        config = pi.make_config(quantized, threads=settings["threads"], onednn=True, memory_optim=False,
                                optim_cache=False)
        config.enable_onednn_int8()
        config.enable_new_ir(False)
        return config

    executed: Counter = Counter()

    def precision_receipt(receipt) -> None:  # what ran, read back from Paddle (the probe run below)
        receipt.options["precision"] = "int8" if executed else "fp32"
        if not executed:
            receipt.fallback_evidence.append("int8 was asked but no op produced int8/uint8 outputs in the probe"
                                             " run: Paddle ran the quantized program in fp32")

    predictor = PaddleInt8Predictor(model, quantized, device, make_config, receipt_extra=precision_receipt,
                                    options={k: v for k, v in options.items() if k != "calibration"},
                                    check_finite=settings["check_finite"])
    executed.update(ops_with_outputs(quantized, make_config(), _INTEGER_DTYPES, predictor.inputs))
    predictor.notes.append(f"precision: int8 program {artifact.directory} ({TARGET}: {artifact.metadata['quantizer']},"
                           f" {artifact.metadata['quantize_ops']} quantize_linear ops), run with oneDNN int8 on the"
                           " legacy IR")
    if predictor.pass_log:
        predictor.notes.append(f"precision: Paddle's oneDNN int8 pass quantized {', '.join(predictor.pass_log)}")
    listed = ", ".join(f"{op} x{n}" for op, n in sorted(executed.items())) or "none"
    predictor.notes.append(f"precision: ops with int8/uint8 outputs in a probe run (Paddle's output hook): {listed}")
    return predictor


class PaddleInt8Predictor(pi.PaddleInferencePredictor):
    """A Paddle Inference predictor on an int8 program whose clones are fresh predictors.

    Paddle's own ``clone()`` shares the weights' scope, and with oneDNN int8 a clone's run and its original's then
    disagree on the weights' layout: the original fails on its next new batch size with "The Filter tensor's
    layout should be ONEDNN, but got NCHW" (measured with Paddle 3.3.1). A fresh predictor has its own scope.
    """

    def __init__(self, model: Model, quantized: Model, device, make_config, **kwargs: Any):
        config = make_config()
        paddle_predictor, self.pass_log = create_quietly(config, quantized)
        super().__init__(quantized, device, config, paddle_predictor=paddle_predictor, **kwargs)
        self._quantized, self._make_config = quantized, make_config
        self.model = model  # the receipt names the model the caller asked for; the int8 program is in the evidence

    def _clone(self) -> "PaddleInt8Predictor":
        twin = object.__new__(type(self))
        twin.__dict__.update(self.__dict__)
        twin.config = self._make_config()
        twin._predictor, _log = create_quietly(twin.config, self._quantized)
        twin._bind_handles()
        return twin


def create_quietly(config, quantized: Model):
    """``(paddle predictor, Paddle's int8 pass lines)``: the passes print ~30 lines to fd 2 on every creation,
    which a library must not; the lines that say what was quantized become evidence."""
    from hwdeploy.sdk.paddle_kernels import capture_lock, capture_native_output

    sink: list[str] = []
    with capture_lock, capture_native_output(sink):
        predictor = pi.create_paddle_predictor(config, quantized)
    found = re.findall(r"quantized (\d+) ([\w ]+?) *\x1b", "".join(sink))
    return predictor, [f"{n} {what.strip()}" for n, what in found if int(n)]


def ops_with_outputs(model: Model, config, dtypes: tuple[str, ...], inputs=None) -> Counter:
    """Ops whose outputs have one of ``dtypes`` when a predictor of its own runs once on made-up inputs (Paddle's
    per-op output hook; the hook stays on that probe, never on the predictor handed out)."""
    from hwdeploy.sdk.inputs import random_inputs

    inputs = pi.program_io(model)[0] if inputs is None else inputs
    probe, _log = create_quietly(config, model)
    seen: Counter = Counter()
    probe.register_output_hook(lambda op_type, _name, tensor: seen.update(
        [op_type] if str(tensor.dtype) in dtypes else []))
    try:
        for spec, array in zip(inputs, random_inputs(inputs)):
            handle = probe.get_input_handle(spec.name)
            handle.reshape(list(array.shape))
            handle.copy_from_cpu(array)
        probe.run()
    except Exception as exc:  # Paddle raises RuntimeError/ValueError with C++ context
        raise BackendError(f"Paddle's oneDNN kernels cannot run {model.program.parent.name}/{model.program.name} in"
                           f" {' / '.join(dtypes)}: {pi.first_line(exc)}") from exc
    return seen


def precision_receipt(precision: str, executed: Counter):
    """A ``receipt_extra`` that sets ``options["precision"]`` to what the probe saw run, and refuses a silent fp32."""
    def extra(receipt) -> None:
        receipt.options["precision"] = precision if executed else "fp32"
        listed = ", ".join(f"{op} x{n}" for op, n in sorted(executed.items())) or "none"
        receipt.evidence.append(f"precision: ops with {precision} outputs in a probe run (Paddle's output hook): {listed}")
        if not executed:
            receipt.fallback_evidence.append(f"{precision} was asked but no op produced {precision} outputs in the"
                                             " probe run: Paddle ran the program in fp32")
    return extra
