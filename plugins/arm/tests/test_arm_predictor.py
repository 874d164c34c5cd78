"""The Lite predictor, run for real on Lite's x86 target through the worker + MobileConfig path.

Parity: every zoo model, from its PIR export (translated) and its legacy export (patched), against
the CPU reference (Paddle Inference, native kernels). The bound is relative L2 <= 1e-5, except
where float32 itself does not define the result that finely: Paddle Inference's own two kernel
libraries (oneDNN and native) disagree by up to 2.9e-5 on mobilenet_v2, so the bound is then twice
that measured disagreement (see plugins/arm/README.md for the float64 analysis).
"""

from __future__ import annotations

import os
import shutil

import numpy as np
import pytest

import hwdeploy
from hwdeploy.errors import BackendError, DeviceNotFoundError, InputError, ModelFormatError, OptionError
from hwdeploy.sdk.testing import rel_l2
from hwdeploy_arm import UnrunnableModelError, load_nb
from hwdeploy_arm.predictor import LitePredictor, example_inputs, pick_faster
from hwdeploy_arm.worker import LiteWorkerError

# tiny_segmenter: PIR only (its resizes take their size from run-time shape tensors: OutSize in the translation).
# The rest: PP-LCNet's SE/hardswish, ShuffleNet's split + 5-D transpose, DB's nearest upsampling and transposed
# convs, CRNN's 2x1 pools + attention, PicoDet's distribution-focal decoding (PIR only: matmul with a 1-D arange).
ZOO = ["mlp", "mobilenet_v2", "resnet18", "transformer_encoder", "gru_text", "unet_small", "tiny_segmenter",
       "lcnet_small", "shufflenet_small", "ocr_detector", "ocr_recognizer", "tiny_detector_raw"]
PARITY = 1e-5


def _reference(model, inputs, **options):
    with hwdeploy.predictor(model, device="cpu", backend="paddle-inference", threads=1, **options) as p:
        return p.run(*inputs)


def _reference_noise(z, inputs, reference) -> float:
    """How far Paddle Inference's oneDNN kernels are from its native ones on this model (0 if oneDNN fails)."""
    for model in (m for m in (z.model, z.legacy) if m is not None):
        try:
            onednn = _reference(model, inputs, onednn=True)
        except BackendError:  # e.g. oneDNN + PIR nearest_interp on Paddle 3.3.1
            continue
        return max(rel_l2(a, b) for a, b in zip(onednn, reference))
    return 0.0


@pytest.mark.parametrize("source", ["pir", "legacy"])
@pytest.mark.parametrize("name", ZOO)
def test_lite_x86_matches_the_cpu_reference(name, source, lite_python, zoo_model):
    z = zoo_model(name)
    model = z.model if source == "pir" else z.legacy
    if model is None:
        pytest.skip(f"the zoo has no legacy export of {name}: {z.legacy_error} (the pir case covers it)")
    inputs = z.sample_inputs(batch=2, seed=11)
    with hwdeploy.predictor(model, device="cpu", backend="paddle-lite", threads=1) as lite:
        outputs = lite.run(*inputs)
        receipt = lite.receipt()
    reference = _reference(z.model, inputs, onednn=False)
    noise = _reference_noise(z, inputs, reference)
    errors = [rel_l2(a, b) for a, b in zip(outputs, reference)]
    assert [o.shape for o in outputs] == [r.shape for r in reference]
    assert max(errors) <= max(PARITY, 2 * noise), f"{name}/{source}: rel L2 {errors}, reference noise {noise:.2e}"
    # the receipt: Lite's x86 kernels on this CPU, every op accounted for
    assert receipt.backend == "paddle-lite" and receipt.actual == "cpu:0" and receipt.plugin == "arm"
    assert receipt.ops_known and receipt.ops and not receipt.fallback_reasons()
    assert receipt.runtime_versions["paddlelite"] == "v2.13-rc"


@pytest.fixture(scope="module")
def mobilenet(lite_python, zoo_model):
    z = zoo_model("mobilenet_v2")
    p = hwdeploy.predictor(z.model, device="cpu", backend="paddle-lite", threads=1)
    yield z, p
    p.close()


def test_one_worker_serves_every_run_and_clones_get_their_own(mobilenet):
    z, p = mobilenet
    x = z.sample_inputs(batch=1, seed=5)
    first = p.run(*x)[0]
    pid = p.worker.pid
    for _ in range(3):
        np.testing.assert_array_equal(p.run(*x)[0], first)
    assert p.worker.pid == pid
    twin = p.clone()
    try:
        assert twin.worker.pid != pid
        np.testing.assert_array_equal(twin.run(*x)[0], first)
        assert twin.receipt().plugin == "arm"
    finally:
        twin.close()


def test_inputs_are_validated_before_lite_sees_them(mobilenet):
    z, p = mobilenet
    with pytest.raises(InputError, match="shape"):
        p.run(np.zeros((1, 3, 112, 112), np.float32))  # Lite would "run" this and return garbage
    with pytest.raises(InputError, match="dtype"):
        p.run(np.zeros((1, 3, 224, 224), np.float16))  # Lite's from_numpy would abort
    with pytest.raises(InputError, match="NaN"):
        p.run(np.full((1, 3, 224, 224), np.nan, np.float32))
    assert p.worker.alive


def test_options(lite_python, zoo_model):
    model = zoo_model("mlp").model
    with pytest.raises(OptionError, match="unknown option"):
        hwdeploy.predictor(model, device="cpu", backend="paddle-lite", precision="int8")
    with pytest.raises(OptionError, match="power_mode"):
        hwdeploy.predictor(model, device="cpu", backend="paddle-lite", power_mode="turbo")
    with pytest.raises(OptionError, match="threads"):
        hwdeploy.predictor(model, device="cpu", backend="paddle-lite", threads=0)
    with hwdeploy.predictor(model, device="cpu", backend="paddle-lite", threads=2, power_mode="high") as p:
        with open(f"/proc/{p.worker.pid}/environ", "rb") as fh:
            environ = dict(kv.split(b"=", 1) for kv in fh.read().split(b"\0") if b"=" in kv)
        assert environ[b"OMP_NUM_THREADS"] == b"2" and environ[b"MKL_NUM_THREADS"] == b"2"
        evidence = " ".join(p.receipt().evidence)
        assert "power_mode=high not applied" in evidence  # ARM-only setting, said so instead of ignored


def test_auto_does_not_prefer_lite_over_the_reference(lite_python):
    with hwdeploy.predictor("zoo:mlp", device="auto") as p:
        assert p.receipt().backend != "paddle-lite"


# ----------------------------------------------------------------------------- refusing what cannot run here

@pytest.mark.parametrize("target, why", [
    ("arm", "ARM kernels need an ARM CPU"),
    ("huawei_ascend_npu", "NNAdapter subgraphs need a Lite runtime built with LITE_WITH_NNADAPTER=ON"),
    ("cambricon_mlu", "NNAdapter subgraphs need a Lite runtime built with LITE_WITH_NNADAPTER=ON"),
    ("opencl", "OpenCL kernels need"),
])
def test_nb_for_other_hardware_is_refused(target, why, lite_python, zoo_model):
    artifact = hwdeploy.convert(zoo_model("mobilenet_v2").model, target)
    with pytest.raises(UnrunnableModelError) as info:
        load_nb(artifact.path("model.nb"))
    message = str(info.value)
    assert why in message and "garbage" in message and "this host is x86_64" in message
    assert set(info.value.missing) & {"arm", "nnadapter", "opencl"}


def test_arm_device_is_absent_with_the_reason(lite_python, zoo_model):
    with pytest.raises(DeviceNotFoundError, match="not an ARM CPU"):
        hwdeploy.predictor(zoo_model("mlp").model, device="arm")


def test_load_nb_reads_specs_from_the_conversion_report(lite_x86_nb):
    artifact, z = lite_x86_nb("transformer_encoder")
    with load_nb(artifact.path("model.nb")) as p:
        assert [(s.name, s.shape, s.dtype) for s in p.inputs] == [("tokens", (-1, -1), "int64")]
        tokens = z.sample_inputs(batch=3, seed=2, seq_len=17)
        assert rel_l2(p.run(*tokens)[0], _reference(z.model, tokens, onednn=False)[0]) <= PARITY


# ----------------------------------------------------------------------------- Lite crashes

def test_a_lite_abort_on_a_bad_shape_is_a_clear_error_and_the_predictor_recovers(lite_x86_nb, tmp_path):
    artifact, z = lite_x86_nb("mlp")
    bare = tmp_path / "mlp.nb"  # no report beside it: no input specs, so nothing stops the bad shape
    shutil.copyfile(artifact.path("model.nb"), bare)
    with load_nb(bare) as p:
        assert p.inputs[0].shape == ()
        with pytest.raises(LiteWorkerError) as info:
            p.run(np.ones((2, 65), np.float32))
        message = str(info.value)
        assert isinstance(info.value, BackendError)
        assert "SIGABRT (rc 134)" in message and "matmul_v2" in message and "65" in message
        x = z.sample_inputs(batch=2, seed=1)
        np.testing.assert_allclose(p.run(*x)[0], _reference(z.model, x, onednn=False)[0], rtol=1e-4, atol=1e-5)


def test_a_corrupt_nb_is_a_clear_error(lite_x86_nb, tmp_path):
    artifact, _ = lite_x86_nb("mlp")
    data = artifact.path("model.nb").read_bytes()
    truncated = tmp_path / "truncated.nb"
    truncated.write_bytes(data[: len(data) // 2])  # header and kernels intact, weights cut off
    with pytest.raises(LiteWorkerError, match=r"SIGABRT.*\n.*Failed to read"):
        load_nb(truncated)
    garbage = tmp_path / "garbage.nb"
    garbage.write_bytes(os.urandom(4096))
    with pytest.raises(ModelFormatError, match="not a Paddle Lite .nb"):
        load_nb(garbage)  # refused before Lite sees it


# ----------------------------------------------------------------------------- choosing the faster engine

def test_pick_faster_keeps_the_faster_engine_and_closes_the_other(lite_python, zoo_model):
    """The selection ARM hosts use (Lite vs Paddle Inference), exercised here with the x86 twins."""
    model = zoo_model("mlp").model
    lite = hwdeploy.predictor(model, device="cpu", backend="paddle-lite", threads=1)
    inference = hwdeploy.predictor(model, device="cpu", backend="paddle-inference", threads=1)
    inputs = example_inputs(lite.inputs, model.metadata)
    assert inputs[0].shape == (1, 64)
    winner, timings = pick_faster([lite, inference], inputs, runs=3)
    assert set(timings) == {"paddle-lite", "paddle-inference"} and all(t > 0 for t in timings.values())
    assert timings[winner.backend] == min(timings.values())
    loser = inference if winner is lite else lite
    if isinstance(loser, LitePredictor):
        assert not loser.worker.alive
    np.testing.assert_allclose(winner.run(*inputs)[0], _reference(model, inputs)[0], rtol=1e-4, atol=1e-5)
    winner.close()


@pytest.mark.parametrize("batch", [1, 3])
def test_the_detector_runs_its_nms_on_lite_with_the_references_boxes(batch, lite_python, zoo_model):
    """tiny_detector through the translation (arange/meshgrid grid, builtin.split, multiclass_nms3) on Lite x86:
    the same number of boxes per image and the same boxes (class, score, corners) as the CPU reference."""
    z = zoo_model("tiny_detector")
    inputs = z.sample_inputs(batch=batch, seed=11)
    with hwdeploy.predictor(z.model, device="cpu", backend="paddle-lite", threads=1) as lite:
        rows, counts = lite.run(*inputs)
        assert not lite.receipt().fallback_reasons()
    ref_rows, ref_counts = _reference(z.model, inputs, onednn=False)
    np.testing.assert_array_equal(counts, ref_counts)
    assert len(set(ref_counts.tolist())) > 1 or batch == 1
    np.testing.assert_array_equal(rows[:, 0], ref_rows[:, 0])  # classes
    np.testing.assert_allclose(rows[:, 1:], ref_rows[:, 1:], rtol=1e-5, atol=1e-4)  # scores, corners (pixels)


SHUFFLE_BLOCK = """
    import sys
    import paddle
    import paddle.nn as nn

    class ShuffleBlock(nn.Layer):
        # ShuffleNetV2's unit: chunk (split_with_num), a branch, concat, 5-D channel shuffle; plus split by sections.
        def __init__(self):
            super().__init__()
            self.branch = nn.Sequential(nn.Conv2D(4, 4, 1), nn.ReLU(), nn.Conv2D(4, 4, 3, padding=1, groups=4))

        def forward(self, x):
            left, right = x.chunk(2, axis=1)
            y = paddle.concat([left, self.branch(right)], axis=1)
            n, c, h, w = y.shape
            y = y.reshape([-1, 2, c // 2, h, w]).transpose([0, 2, 1, 3, 4]).reshape([-1, c, h, w])
            a, b = paddle.split(y, [3, 5], axis=1)
            return a * 2.0, b

    layer = ShuffleBlock()
    layer.eval()
    paddle.jit.save(layer, sys.argv[1], input_spec=[paddle.static.InputSpec([None, 8, 6, 6], "float32", "x")])
"""


def test_split_variants_and_a_5d_shuffle_run_on_lite(lite_python, tmp_path):
    from hwdeploy.sdk.testing import build_model

    directory = build_model(SHUFFLE_BLOCK, tmp_path / "shuffle" / "model").parent
    x = np.random.default_rng(2).standard_normal((2, 8, 6, 6)).astype("float32")
    with hwdeploy.predictor(directory, device="cpu", backend="paddle-lite", threads=1) as lite:
        outputs = lite.run(x)
    reference = _reference(hwdeploy.load_model(directory), [x], onednn=False)
    assert [o.shape for o in outputs] == [r.shape for r in reference] == [(2, 3, 6, 6), (2, 5, 6, 6)]
    assert max(rel_l2(a, b) for a, b in zip(outputs, reference)) <= PARITY
