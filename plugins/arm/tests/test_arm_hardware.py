"""Hardware tests: need an ARM board with a Paddle Lite Python runtime. Run in a lab with ``-m arm``.

On an ARM host set HWDEPLOY_LITE_PYTHON to a CPython <= 3.10 that has a self-built ``paddlelite``
(no aarch64 wheel on PyPI); install paddlepaddle (aarch64 wheels up to 3.2.2) to also test the
Paddle Inference engine and the faster-engine choice. Here (x86-64) every test skips with the
reason discovery gives.
"""

from __future__ import annotations

import pytest

import hwdeploy
from hwdeploy.sdk.testing import rel_l2

pytestmark = pytest.mark.arm

ZOO = ["mlp", "mobilenet_v2", "resnet18", "transformer_encoder", "gru_text", "unet_small"]


@pytest.fixture(scope="module")
def arm():
    found = [d for d in hwdeploy.devices(refresh=True) if d.plugin == "arm" and d.kind == "arm"]
    usable = [d for d in found if d.available]
    if not usable:
        why = "; ".join(d.reason for d in found) or "the arm plugin reported no arm device"
        pytest.skip(f"needs an ARM CPU host with Paddle Lite ({why})")
    return usable[0]


@pytest.fixture(scope="module")
def arm_lite(arm):
    if "paddle-lite" not in arm.details.get("engines", ["paddle-lite"]):
        pytest.skip(f"no Paddle Lite runtime on this ARM host: {arm.details.get('lite_missing')}")
    return arm


@pytest.mark.parametrize("name", ZOO)
def test_arm_lite_matches_the_cpu_reference(name, arm_lite):
    from hwdeploy import zoo

    z = zoo.get(name)
    inputs = z.sample_inputs(batch=2, seed=11)
    with hwdeploy.predictor(z.model, device="arm", engine="paddle-lite", threads=2, power_mode="high") as p:
        outputs = p.run(*inputs)
        receipt = p.receipt()
    assert receipt.actual == "arm:0" and not receipt.fallback_reasons()
    assert p.applied == {"threads": 2, "power_mode": "high"}  # MobileConfig has both on ARM builds
    with hwdeploy.predictor(z.model, device="cpu", backend="paddle-inference", threads=2) as ref:
        reference = ref.run(*inputs)
    for got, want in zip(outputs, reference):
        assert rel_l2(got, want) <= 1e-4  # ARM NEON kernels (fp32) vs Paddle Inference on the same board


def test_auto_picks_the_faster_engine(arm):
    if arm.details.get("engines") != ["paddle-lite", "paddle-inference"]:
        pytest.skip(f"needs both Paddle Lite and Paddle Inference on this ARM host (have {arm.details.get('engines')})")
    with hwdeploy.predictor("zoo:mobilenet_v2", device="auto", threads=2) as p:
        assert p.device.kind == "arm"
        evidence = " ".join(p.receipt().evidence)
        assert "chosen by measurement" in evidence and "paddle-lite" in evidence and "paddle-inference" in evidence


def test_x86_nb_is_refused_on_arm(arm_lite):
    from hwdeploy_arm import UnrunnableModelError, load_nb

    artifact = hwdeploy.convert("zoo:mlp", "x86")
    with pytest.raises(UnrunnableModelError, match="x86 kernels need an x86-64 host"):
        load_nb(artifact.path("model.nb"))
