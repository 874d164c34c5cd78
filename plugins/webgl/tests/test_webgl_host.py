"""The host stage (hwdeploy_webgl.host) against Paddle's own kernels, and a detector through page + host.

multiclass_nms3 is compared with Paddle's CPU kernel on 400 generated detection sets (ties in score and
in IoU, degenerate boxes, adaptive thresholds, top-k truncation, a background class, pixel boxes): Paddle
runs in a child process, the rows, indices and counts must be identical.
"""

import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

import hwdeploy
from hwdeploy import zoo
from hwdeploy.errors import FallbackError
from hwdeploy_webgl import host

CASES = 400

PADDLE_NMS = textwrap.dedent("""
    import json, sys
    import numpy as np
    import paddle
    paddle.set_device("cpu")
    cases = json.load(open(sys.argv[1]))
    data = np.load(sys.argv[2])
    out = {}
    for i, attrs in enumerate(cases):
        boxes, scores = paddle.to_tensor(data[f"boxes{i}"]), paddle.to_tensor(data[f"scores{i}"])
        rows, index, counts = paddle._C_ops.multiclass_nms3(
            boxes, scores, None, attrs["score_threshold"], attrs["nms_top_k"], attrs["keep_top_k"],
            attrs["nms_threshold"], attrs["normalized"], attrs["nms_eta"], attrs["background_label"])
        out[f"rows{i}"], out[f"index{i}"], out[f"counts{i}"] = rows.numpy(), index.numpy(), counts.numpy()
    np.savez(sys.argv[3], **out)
""")


def _case(rng: np.random.Generator) -> tuple[dict, np.ndarray, np.ndarray]:
    n, m, c = int(rng.integers(1, 4)), int(rng.integers(1, 41)), int(rng.integers(1, 5))
    centre = rng.uniform(0, 64, (n, m, 2))
    size = rng.uniform(0, 30, (n, m, 2))
    if rng.random() < 0.5:  # a coarse grid: equal boxes and equal IoUs
        centre, size = np.round(centre / 8) * 8, np.round(size / 8) * 8
    boxes = np.concatenate([centre - size / 2, centre + size / 2], axis=-1)
    flip = rng.random((n, m)) < 0.1  # degenerate boxes (x2 < x1): no area
    boxes[flip] = boxes[flip][:, [2, 1, 0, 3]]
    scores = rng.uniform(0, 1, (n, c, m))
    if rng.random() < 0.5:  # ties in score
        scores = np.round(scores, 1)
    attrs = {"score_threshold": float(rng.choice([0.0, 0.05, 0.3, 0.7])), "nms_top_k": int(rng.choice([-1, 5, 64])),
             "keep_top_k": int(rng.choice([-1, 3, 20, 100])), "nms_threshold": float(rng.choice([0.3, 0.5, 0.7])),
             "normalized": bool(rng.random() < 0.5), "nms_eta": float(rng.choice([1.0, 0.8])),
             "background_label": int(rng.choice([-1, 0]))}
    return attrs, boxes.astype(np.float32), scores.astype(np.float32)


@pytest.fixture(scope="module")
def paddle_nms(tmp_path_factory):
    root = tmp_path_factory.mktemp("nms")
    rng = np.random.default_rng(20261203)
    cases = [_case(rng) for _ in range(CASES)]
    (root / "cases.json").write_text(json.dumps([attrs for attrs, _, _ in cases]))
    np.savez(root / "in.npz", **{f"boxes{i}": b for i, (_, b, _) in enumerate(cases)},
             **{f"scores{i}": s for i, (_, _, s) in enumerate(cases)})
    proc = subprocess.run([sys.executable, "-c", PADDLE_NMS, str(root / "cases.json"), str(root / "in.npz"),
                           str(root / "out.npz")], capture_output=True, text=True, timeout=300,
                          env=dict(os.environ, OMP_NUM_THREADS="1", GLOG_minloglevel="2"))
    assert proc.returncode == 0, proc.stderr[-2000:]
    with np.load(root / "out.npz") as out:
        return cases, {k: out[k] for k in out.files}


def test_nms_matches_paddles_kernel_row_for_row(paddle_nms):
    cases, expected = paddle_nms
    kept = truncated = 0
    for i, (attrs, boxes, scores) in enumerate(cases):
        rows, index, counts = host.multiclass_nms(boxes, scores, attrs)
        np.testing.assert_array_equal(counts, expected[f"counts{i}"], err_msg=f"case {i}: {attrs}")
        np.testing.assert_array_equal(rows, expected[f"rows{i}"].reshape(-1, 6), err_msg=f"case {i}: {attrs}")
        np.testing.assert_array_equal(index, expected[f"index{i}"].reshape(-1, 1), err_msg=f"case {i}")
        assert rows.dtype == np.float32 and index.dtype == counts.dtype == np.int32
        kept += len(rows)
        truncated += attrs["keep_top_k"] > -1 and counts.max(initial=0) == attrs["keep_top_k"]
    assert kept > 2000 and truncated > 20  # the cases really exercise NMS and keep_top_k


def test_every_host_kernel_the_converter_may_use_exists():
    from hwdeploy_webgl.converter import HOST_ONLY_OPS

    assert set(HOST_ONLY_OPS) <= set(host.KERNELS)
    assert {"pd_op.divide", "pd_op.slice", "pd_op.concat", "pd_op.unsqueeze", "builtin.combine",
            "pd_op.fetch"} <= set(host.KERNELS)


@pytest.mark.slow
@pytest.mark.parametrize("batch", [1, 3])
def test_the_detector_runs_on_the_page_and_its_nms_on_the_host(webgl_ready, batch):
    """tiny_detector (image + scale_factor, multiclass_nms3): the page computes boxes and scores, the host the
    division by scale_factor and NMS. Same boxes per image and the same boxes as the CPU reference; the
    receipt lists the host stage as off the device, so the default policy refuses it."""
    z = zoo.get("tiny_detector")
    inputs = z.sample_inputs(batch=batch, seed=11)
    with hwdeploy.predictor(z.model, device="cpu") as cpu:
        ref_rows, ref_counts = cpu.run(*inputs)
    with hwdeploy.predictor(z.model, device="webgl", allow_software_renderer=True, fallback="allow",
                            timeout=900) as p:
        assert p.input_names == ["x", "scale_factor"] and p.output_names == ["fetch_name_0", "fetch_name_1"]
        rows, counts = p.run(*inputs)
        receipt = p.receipt()
    np.testing.assert_array_equal(counts, ref_counts)
    assert len(set(ref_counts.tolist())) > 1 or batch == 1
    np.testing.assert_array_equal(rows[:, 0], ref_rows[:, 0])  # classes
    np.testing.assert_allclose(rows[:, 1], ref_rows[:, 1], rtol=1e-4, atol=1e-5)  # scores
    np.testing.assert_allclose(rows[:, 2:], ref_rows[:, 2:], rtol=1e-4, atol=1e-3)  # corners, in pixels
    off = {op.op: (op.device, op.reason) for op in receipt.ops if op.device != "webgl:0"}
    assert set(off) == {"pd_op.slice", "pd_op.concat", "pd_op.unsqueeze", "pd_op.divide", "pd_op.multiclass_nms3"}
    assert off["pd_op.multiclass_nms3"] == ("cpu:0", "host stage: Paddle.js has no NMS kernel")
    assert any(op.device == "webgl:0" and op.op == "conv2d" for op in receipt.ops)
    assert any("host stage after the page: 6 op(s)" in e and "['scale_factor']" in e for e in receipt.evidence)
    if batch == 1:
        with pytest.raises(FallbackError, match=r"ran off webgl:0: .*pd_op.multiclass_nms3 \(host stage"):
            hwdeploy.predictor(z.model, device="webgl", allow_software_renderer=True)


@pytest.mark.slow
def test_a_second_input_added_on_the_host_gives_paddles_numbers(webgl_ready, small_models):
    from webgl_testlib import assert_parity, cpu_reference

    rng = np.random.default_rng(3)
    x, y = rng.standard_normal((3, 4)).astype("float32"), rng.standard_normal((3, 4)).astype("float32")
    ref = cpu_reference(small_models["two_inputs"], x, y)[0]
    with hwdeploy.predictor(small_models["two_inputs"], device="webgl", allow_software_renderer=True,
                            fallback="allow") as p:
        assert_parity(p.run(x, y)[0], ref)
        assert [op.op for op in p.receipt().ops if op.device == "cpu:0"] == ["pd_op.add"]
