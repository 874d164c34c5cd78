"""``precision="int8"`` for OpenVINO: NNCF post-training quantization of the IR.

The conversion target ``openvino-int8`` (declared by this plugin) takes the
cached fp32 IR of the ``openvino`` target and runs ``nncf.quantize`` on it
(NNCF's default ``performance`` preset: symmetric int8 weights per output
channel, int8/uint8 activations per tensor, fast bias correction), one
calibration row per sample. On an x86 CPU without VNNI, whose int8 kernels
add pairs in int16 and saturate, NNCF's overflow fix (7-bit weights) covers
every layer instead of only the first (measured on digits_cnn on an AVX2-only
EPYC: relative L2 error against fp32 0.163 with the default, 0.074 with it). NNCF runs OpenVINO inference to collect its
statistics, so it runs in a child process: a crash there is a
:class:`~hwdeploy.errors.ConversionError`, never the host's. The quantized IR
holds ``FakeQuantize`` ops; OpenVINO's CPU plugin fuses them and runs the
layers between them in int8, which the predictor's receipt reads back layer by
layer. ``calibration=`` and its checks are the SDK's
(:mod:`hwdeploy.sdk.calibration`); the artifact is cached by model hash +
calibration data hash + options, like every conversion::

    hwdeploy.predictor(model, "cpu", backend="openvino", precision="int8", calibration=...)
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from hwdeploy.errors import ConversionError
from hwdeploy.sdk import calibration
from hwdeploy.sdk.hostinfo import dist_version, int8_saturates
from hwdeploy.sdk.isolation import run_probe
from hwdeploy.sdk.onnx_export import OPSET, onnx_options
from hwdeploy.sdk.options import Option, OptionSchema

TARGET = "openvino-int8"
OVERFLOW_FIX = Option("overflow_fix", bool, None, "7-bit weights in every layer, NNCF's OverflowFix.ENABLE (default:"
                      " on an x86 CPU without VNNI, whose int8 kernels saturate; else NNCF's first-layer default)")
CONVERSION_OPTIONS = OptionSchema("openvino-int8 conversion", [*calibration.CONVERSION_OPTIONS, OPSET, OVERFLOW_FIX])
QUANTIZE_TIMEOUT = 900.0


def nncf_missing() -> str:
    """Why int8 is unavailable ("" when NNCF is installed)."""
    return "" if dist_version("nncf") else "precision='int8' on OpenVINO needs NNCF (pip install nncf)"


def quantize_in_child(fp32_xml: str, calibration_npz: str, names: list[str], output_xml: str,
                      overflow_fix: bool) -> dict[str, Any]:
    """``nncf.quantize`` + ``save_model`` (runs in the child process)."""
    import nncf
    import numpy as np
    import openvino as ov

    with np.load(calibration_npz, allow_pickle=False) as data:
        arrays = [data[name] for name in names]
    samples = calibration.batches(names, arrays, 1)
    model = ov.Core().read_model(fp32_xml)
    fix = nncf.OverflowFix.ENABLE if overflow_fix else nncf.OverflowFix.FIRST_LAYER
    quantized = nncf.quantize(model, nncf.Dataset(samples), subset_size=len(samples),
                              advanced_parameters=nncf.AdvancedQuantizationParameters(overflow_fix=fix))
    ov.save_model(quantized, output_xml, compress_to_fp16=False)
    fake_quantize = sum(op.get_type_name() == "FakeQuantize" for op in quantized.get_ordered_ops())
    return {"nncf": nncf.__version__, "fake_quantize_ops": int(fake_quantize)}


def quantize(model, options: dict[str, Any], output_dir: Path):
    """The ``openvino-int8`` conversion: fp32 IR (cached) -> nncf.quantize (in a child) -> int8 IR."""
    import hwdeploy
    from hwdeploy import Artifact

    settings = CONVERSION_OPTIONS.check(options)
    overflow_fix = int8_saturates() if settings["overflow_fix"] is None else settings["overflow_fix"]
    missing = nncf_missing()
    if missing:
        raise ConversionError(missing)
    fp32 = hwdeploy.convert(model, "openvino", **onnx_options(settings["opset"]))
    names, arrays, sha = calibration.load_checked(model, settings, "openvino-int8 conversion")
    output_xml = Path(output_dir) / "model.xml"
    result = run_probe(f"{__name__}:quantize_in_child",
                       [str(fp32.path()), settings["calibration"], names, str(output_xml), overflow_fix], timeout=QUANTIZE_TIMEOUT)
    if not (result.ok and output_xml.exists()):
        layers = "all layers" if overflow_fix else "first layer"
        raise ConversionError(f"int8 quantization of {model.name or model.program} failed at step nncf.quantize"
                              f" (OpenVINO IR, performance preset, overflow fix on the {layers}):"
                              f" {result.error or 'no IR written'}")
    if not result.value["fake_quantize_ops"]:
        raise ConversionError(f"int8 quantization of {model.name or model.program}: nncf.quantize wrote an IR with"
                              " no FakeQuantize ops")
    facts = {"precision": "int8", "quantizer": f"nncf {result.value['nncf']}", "preset": "performance",
             "overflow_fix": "enable" if overflow_fix else "first_layer",
             "fake_quantize_ops": result.value["fake_quantize_ops"], "calibration_sha256": sha,
             "calibration_rows": int(len(arrays[0])), "fp32_ir": dict(fp32.metadata),
             "paddle2onnx": fp32.metadata.get("paddle2onnx", ""), "openvino": fp32.metadata.get("openvino", "")}
    return Artifact(TARGET, output_dir, [output_xml.name, output_xml.with_suffix(".bin").name], facts)
