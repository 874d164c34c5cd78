"""ONNX Runtime's silent provider fallback, caught.

Asked for ``["CUDAExecutionProvider", "CPUExecutionProvider"]`` without a
usable CUDA provider (here: the CPU-only wheel), ORT creates the session
anyway, on the CPU, with at most a UserWarning. That is exactly what
onnxruntime-gpu does when CUDA/cuDNN libraries are missing. These tests ask a
real ORT session for CUDA and check that hwdeploy reads the truth back from
``session.get_providers()`` and refuses, by default, to call it a GPU.
"""

from importlib import metadata

import numpy as np
import pytest

import hwdeploy
from hwdeploy import Device, zoo
from hwdeploy.errors import FallbackError

import hwdeploy_onnxruntime.plugin as ort_plugin
from hwdeploy_onnxruntime.predictor import OrtPredictor


def _has_cuda_provider() -> bool:
    try:
        metadata.version("onnxruntime-gpu")
    except metadata.PackageNotFoundError:
        return False
    import onnxruntime

    return "CUDAExecutionProvider" in onnxruntime.get_available_providers()


@pytest.fixture(scope="module")
def mlp():
    return zoo.get("mlp")


@pytest.fixture
def cuda_looks_available(monkeypatch):
    """Discovery as onnxruntime-gpu reports it on a machine whose CUDA libraries are broken: CUDA listed."""
    if _has_cuda_provider():
        pytest.skip("a real CUDA provider is present: the silent fallback cannot be provoked here")

    def fake_gpu(versions):
        return Device("gpu", 0, name="CUDA through onnxruntime-gpu", backend="onnxruntime",
                      priority=ort_plugin.GPU_PRIORITY, versions=dict(versions),
                      details={"providers": ["CUDAExecutionProvider", "CPUExecutionProvider"]})

    monkeypatch.setattr(ort_plugin, "_gpu_device", fake_gpu)
    hwdeploy.devices(refresh=True)
    yield
    monkeypatch.undo()
    hwdeploy.devices(refresh=True)


def test_session_asked_for_cuda_gets_only_the_cpu_and_the_receipt_says_so(mlp):
    if _has_cuda_provider():
        pytest.skip("a real CUDA provider is present")
    artifact = hwdeploy.convert(mlp.model, "onnx")
    requested = Device("gpu", 0, backend="onnxruntime", plugin="onnxruntime")
    p = OrtPredictor(mlp.model, requested, artifact.path(), threads=1)
    assert p.requested_providers[0][0] == "CUDAExecutionProvider"
    assert p.granted_providers == ["CPUExecutionProvider"]  # what ORT really holds
    receipt = p.receipt()
    assert receipt.actual == "cpu:0"
    assert p.device == requested.fallback("cpu:0")  # the device it really runs on, named for what it replaces
    assert (p.device.id, p.device.name, p.device.plugin) == ("cpu:0", "cpu (fallback from gpu:0)", "onnxruntime")
    assert any("CUDAExecutionProvider" in e and "get_providers" in e for e in receipt.fallback_evidence)
    reasons = receipt.fallback_reasons()
    assert any("requested gpu:0" in r and "cpu:0" in r for r in reasons)
    # Every node really sits on the CPU provider.
    assert receipt.ops_known and {op.device for op in receipt.ops} == {"cpu:0"}


def test_explicit_gpu_request_is_refused_by_default(mlp, cuda_looks_available):
    gpu = next(d for d in hwdeploy.devices() if d.backend == "onnxruntime" and d.kind == "gpu")
    assert gpu.available  # discovery believed it
    with pytest.raises(FallbackError) as info:
        hwdeploy.predictor(mlp.model, "gpu", backend="onnxruntime", threads=1)
    assert info.value.receipt.actual == "cpu:0"
    assert "CUDAExecutionProvider" in str(info.value)


def test_fallback_allowed_runs_on_the_cpu_and_says_so(mlp, cuda_looks_available):
    p = hwdeploy.predictor(mlp.model, "gpu:0", backend="onnxruntime", fallback="allow", threads=1)
    assert p.device.id == "cpu:0"
    receipt = p.receipt()
    assert receipt.requested == "gpu:0" and receipt.actual == "cpu:0" and receipt.fell_back
    x = mlp.sample_inputs(2, seed=3)
    reference = hwdeploy.predictor(mlp.model, "cpu", threads=1).run(*x)[0]
    np.testing.assert_allclose(p.run(*x)[0], reference, rtol=1e-4, atol=1e-5)


def test_fallback_warn_policy_warns(mlp, cuda_looks_available):
    with pytest.warns(RuntimeWarning, match="CUDAExecutionProvider"):
        hwdeploy.predictor(mlp.model, "gpu", backend="onnxruntime", fallback="warn", threads=1)


def test_auto_skips_the_falling_back_gpu(mlp, cuda_looks_available):
    above = [d.id for d in hwdeploy.devices() if d.available and d.priority > ort_plugin.GPU_PRIORITY]
    if above:
        pytest.skip(f"auto would stop at {above} before reaching the onnxruntime gpu")
    p = hwdeploy.predictor(mlp.model, "auto", threads=1)
    receipt = p.receipt()
    assert receipt.backend != "onnxruntime" and not receipt.fell_back
    assert any("gpu:0" in s and "CUDAExecutionProvider" in s for s in receipt.auto_skipped)


@pytest.mark.nvidia
def test_real_cuda_session_runs_on_the_gpu(mlp):
    if not _has_cuda_provider():
        pytest.skip("needs onnxruntime-gpu with a working CUDAExecutionProvider and an NVIDIA GPU (hardware lab)")
    p = hwdeploy.predictor(mlp.model, "gpu", backend="onnxruntime", fallback="allow")
    receipt = p.receipt()
    assert receipt.actual == "gpu:0", receipt.fallback_reasons()
    assert any(op.device == "gpu:0" for op in receipt.ops)
