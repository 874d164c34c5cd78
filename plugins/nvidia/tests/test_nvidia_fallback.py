"""Fallback evidence, error paths, the sampler and the tensorrt conversion target, on this machine.

The CPU-only Paddle wheel turns ``enable_use_gpu`` into a silent CPU run (a
verified fact): these tests build that real predictor and check that the
plugin's own evidence catches it, and that the hook never hands it out.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

import hwdeploy
from hwdeploy.contract.records import Device
from hwdeploy.errors import BackendError, ConversionError, FallbackError, OptionError
from hwdeploy.contract.model import load_model
from hwdeploy_nvidia import create_gpu_predictor, plugin
from hwdeploy_nvidia.discovery import BACKEND
from hwdeploy_nvidia.sampler import NvmlSampler

X = np.random.default_rng(1).standard_normal((3, 8)).astype("float32")
USE_GPU_FALSE = "config.use_gpu() == False after enable_use_gpu(256, 0, Float32)"


def _unknown_gpu() -> Device:
    """A gpu device whose TensorRT status nobody probed: Paddle itself gets to say no."""
    return Device("gpu", 0, name="unprobed", backend=BACKEND)


@pytest.mark.parametrize("fmt", ["pir", "legacy"])
def test_enable_use_gpu_on_the_cpu_wheel_is_caught_as_a_fallback(tiny_models, nvidia_gpu, fresh_cache,
                                                                cpu_only_paddle, fmt):
    predictor = create_gpu_predictor(tiny_models[fmt], "gpu:0", {})  # looked up in discovery, unavailable as it is
    receipt = predictor.receipt()
    # Paddle's own state says CPU, and so does everything the plugin reports.
    assert predictor.config.use_gpu() is False
    assert receipt.requested == "gpu:0" and receipt.actual == "cpu:0" and predictor.device.id == "cpu:0"
    assert receipt.backend == BACKEND
    reasons = receipt.fallback_reasons()
    assert "requested gpu:0 but the paddle-inference-gpu runtime runs on cpu:0" in reasons
    assert any(USE_GPU_FALSE in r for r in reasons) and any(USE_GPU_FALSE in e for e in receipt.fallback_evidence)
    assert any("TensorRT off (Paddle is not a CUDA build" in e for e in receipt.evidence)
    # The ops it lists are the ones that ran, placed where they ran.
    assert receipt.ops and {op.device for op in receipt.ops} == {"cpu:0"}
    # And the fallback is real: it computes the CPU reference's numbers, on the CPU.
    reference = hwdeploy.predictor(tiny_models[fmt], device="cpu").run(X)[0]
    np.testing.assert_allclose(predictor.run(X)[0], reference, rtol=1e-5, atol=1e-6)
    twin = predictor.clone()
    assert twin.receipt().fallback_evidence == receipt.fallback_evidence
    np.testing.assert_allclose(twin.run(X)[0], reference, rtol=1e-5, atol=1e-6)
    json.dumps(receipt.to_dict())


def test_the_hook_refuses_the_cpu_predictor_whatever_the_policy(tiny_models, nvidia_gpu, fresh_cache,
                                                                cpu_only_paddle):
    model = load_model(tiny_models["pir"])
    for options in ({}, {"tensorrt": False}, {"precision": "fp16", "tensorrt": False}):
        with pytest.raises(FallbackError) as err:
            plugin.hwdeploy_create_predictor(model=model, device=nvidia_gpu, options=options)
        assert f"refusing a gpu:0 predictor that Paddle runs on cpu:0: config.use_gpu() == False" in str(err.value)
        assert err.value.receipt.actual == "cpu:0" and err.value.receipt.fallback_evidence


def test_the_hook_ignores_devices_it_does_not_own(tiny_models):
    model = load_model(tiny_models["pir"])
    cpu = Device("cpu", 0, backend="paddle-inference")
    assert plugin.hwdeploy_create_predictor(model=model, device=cpu, options={}) is None
    assert plugin.hwdeploy_create_predictor(model=model, device=Device("gpu", 0, backend="onnxruntime"),
                                            options={}) is None
    assert plugin.hwdeploy_utilization_sampler(device=cpu) is None


def test_tensorrt_required_on_a_build_without_it_says_so(tiny_models, nvidia_gpu, cpu_only_paddle):
    with pytest.raises(BackendError, match=r"tensorrt=True but Paddle is not a CUDA build, so it has no TensorRT"):
        create_gpu_predictor(tiny_models["legacy"], nvidia_gpu, {"tensorrt": True})
    with pytest.raises(BackendError, match="precision='int8' needs TensorRT, but Paddle is not a CUDA build"):
        create_gpu_predictor(tiny_models["legacy"], nvidia_gpu,
                             {"precision": "int8", "calibration_inputs": [[X]]})


def test_paddles_own_tensorrt_refusal_is_explained(tiny_models, fresh_cache, cpu_only_paddle):
    with pytest.raises(BackendError) as err:
        create_gpu_predictor(tiny_models["legacy"], _unknown_gpu(), {"precision": "fp16"})
    message = str(err.value)
    assert ("enable_tensorrt_engine(): (PreconditionNotMet) To use Paddle-TensorRT, please compile with TENSORRT"
            in message)
    assert "install a paddlepaddle-gpu wheel built with TensorRT" in message and "tensorrt=False" in message


def test_tuned_shapes_never_collect_on_the_cpu(tiny_models, fresh_cache, cpu_only_paddle):
    with pytest.raises(BackendError, match=r"shape-range collection refused.*config\.use_gpu\(\) == False"):
        create_gpu_predictor(tiny_models["legacy"], _unknown_gpu(), {"sample_inputs": [[X]]})


def test_pir_tensorrt_conversion_failure_is_isolated_and_explained(tiny_models, fresh_cache, cpu_only_paddle):
    # A .json program with TensorRT goes through paddle.tensorrt.convert in a child process.
    with pytest.raises(BackendError) as err:
        create_gpu_predictor(tiny_models["pir"], _unknown_gpu(), {"tensorrt": True})
    assert "PIR-TensorRT conversion of tiny failed" in str(err.value)
    assert "paddle.tensorrt" in str(err.value)  # the CPU wheel has no paddle.tensorrt module
    assert not list((fresh_cache / "nvidia" / "pir-trt").iterdir())  # no half-built engine dir to trust later


def test_dynamic_axes_without_ranges_keep_tensorrt_off_and_say_why(tiny_models, fresh_cache, cpu_only_paddle,
                                                                   monkeypatch):
    from hwdeploy.contract.model import TensorSpec
    from hwdeploy_nvidia import predictor as gpu_predictor

    # The tiny model's only dynamic axis is the batch; give it a dynamic feature axis, as token models have.
    monkeypatch.setattr(gpu_predictor, "input_specs", lambda m: [TensorSpec("x", (-1, -1), "float32")])
    with pytest.raises(ValueError, match=r"input 'x' has dynamic axes \[0, 1\].*pass shapes="):
        create_gpu_predictor(tiny_models["pir"], _unknown_gpu(), {"tensorrt": True})
    predictor = create_gpu_predictor(tiny_models["pir"], _unknown_gpu(), {})  # tensorrt=None: off, and says why
    assert predictor.trt.mode == "off"
    assert any("TensorRT off (no shape ranges for TensorRT: input 'x' has dynamic axes" in e
               for e in predictor.receipt().evidence)


def test_a_converted_program_with_missing_engine_files_is_refused(tiny_models, tmp_path, fresh_cache):
    doc = json.loads(tiny_models["pir"].read_text())
    relu = next(op for op in doc["program"]["regions"][0]["blocks"][0]["ops"] if op["#"] == "1.relu")
    relu["#"] = "1.tensorrt_engine"
    relu.setdefault("A", []).append({"AT": {"#": "0.a_str", "D": str(tmp_path / "gone" / "engine_7_1.trt")},
                                     "N": "engine_serialized_data"})
    (tmp_path / "model.json").write_text(json.dumps(doc))
    (tmp_path / "model.pdiparams").write_bytes(tiny_models["pir"].with_suffix(".pdiparams").read_bytes())
    with pytest.raises(BackendError, match=r"refers to missing TensorRT engine file\(s\).*engine_7_1\.trt"):
        create_gpu_predictor(tmp_path / "model.json", _unknown_gpu(), {})


def test_nvml_sampler_says_why_it_cannot_sample(nvidia_gpu):
    sampler = plugin.hwdeploy_utilization_sampler(device=nvidia_gpu)
    assert isinstance(sampler, NvmlSampler)
    try:
        import ctypes

        ctypes.CDLL("libnvidia-ml.so.1")
        pytest.skip("NVML is present: the hardware tests sample for real")
    except OSError:
        pass
    with pytest.raises(BackendError, match=r"NVML sampler for gpu:0: NVML unusable \(NVML Shared Library Not Found\)"):
        sampler.start()
    with pytest.raises(RuntimeError, match="before start"):
        sampler.stop()


# ---------------------------------------------------------------- hwdeploy convert --target tensorrt


def test_tensorrt_is_a_conversion_target_of_the_nvidia_plugin():
    targets = {t.name: (p, t) for p, t in hwdeploy.conversion_targets()}
    owner, target = targets["tensorrt"]
    assert owner == "nvidia" and target.device_kinds == ("gpu",)


def test_convert_without_a_gpu_is_a_clear_conversion_error(tiny_models, fresh_cache, nvidia_gpu):
    if nvidia_gpu.available:
        pytest.skip("a usable NVIDIA GPU is present")
    with pytest.raises(ConversionError) as err:
        hwdeploy.convert(tiny_models["pir"], "tensorrt", precision="fp16", shapes="x:1x8,4x8,8x8")
    assert "cannot build TensorRT engines on this machine: gpu:0: " + nvidia_gpu.reason in str(err.value)
    converted = fresh_cache / "convert" / "tensorrt"
    assert not converted.exists() or not [p for p in converted.iterdir() if not p.name.startswith(".")]


@pytest.mark.parametrize("options, message", [
    ({"workspace": 1}, "tensorrt conversion: unknown option(s) ['workspace']"),
    ({"precision": "int4"}, "tensorrt conversion: option 'precision' must be one of"),
    ({"shapes": "x:1x8,4x8"}, "tensorrt conversion: bad shapes entry 'x:1x8,4x8'"),
    ({"device": "npu:0"}, "tensorrt: device must be a gpu"),
])
def test_convert_checks_its_options_first(tiny_models, fresh_cache, options, message):
    expected = ConversionError if "device" in options else OptionError
    with pytest.raises(expected) as err:
        hwdeploy.convert(tiny_models["pir"], "tensorrt", **options)
    assert message in str(err.value)


@pytest.mark.parametrize("fmt, expected", [
    ("legacy", "building TensorRT subgraph engines failed: hwdeploy_nvidia.probes:build_subgraph_engines exited with"
               " status 1: hwdeploy.errors.BackendError: Paddle refused the GPU configuration: enable_tensorrt_engine()"),
    ("pir", "PIR-TensorRT conversion of tiny failed: hwdeploy_nvidia.probes:convert_pir_trt exited with status 1:"
            " ModuleNotFoundError: No module named 'paddle.tensorrt'"),
])
def test_engine_builds_run_in_a_child_and_their_failures_are_conversion_errors(tiny_models, fresh_cache, monkeypatch,
                                                                               cpu_only_paddle, fmt, expected):
    # Discovery is told a TensorRT GPU is there, so the real build job runs (in its child process) and
    # Paddle itself refuses: the plumbing up to Paddle is exercised, the failure comes back as text.
    pretend = Device("gpu", 0, name="pretend", backend=BACKEND,
                     details={"tensorrt": {"subgraph": True, "pir": True, "runtime_version": "8.6.1"}})
    monkeypatch.setattr(plugin, "_gpu_for", lambda spec: pretend)
    with pytest.raises(ConversionError) as err:
        hwdeploy.convert(tiny_models[fmt], "tensorrt", precision="fp16", shapes="x:1x8,4x8,8x8")
    assert expected in str(err.value)
    converted = fresh_cache / "convert" / "tensorrt"
    assert not [p for p in converted.iterdir() if not p.name.startswith(".")]
