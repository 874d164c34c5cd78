"""Detection-aware parity (hwdeploy_conformance.detection): NMS outputs judged as sets of boxes.

Unit cases are crafted ``multiclass_nms3``-layout arrays (rows ``class, score, x1, y1, x2, y2`` and boxes
per image); the end-to-end cases run the zoo's ``tiny_detector`` (a real ``multiclass_nms3``) through the
suite on the CPU reference here and on the simulated npu in test_conformance_customdevice.py.
"""

from __future__ import annotations

import numpy as np
import pytest

from hwdeploy_conformance.config import DEFAULT_TOLERANCES, ConfigError, load_config
from hwdeploy_conformance.detection import NmsSettings, find_layout
from hwdeploy_conformance.metrics import compare_outputs

TOL = DEFAULT_TOLERANCES["fp32"]
NMS = NmsSettings(score_threshold=0.3, nms_threshold=0.5, keep_top_k=4)


def detections(*images):
    """(rows [K, 6] float32, counts [N] int32) from per-image lists of (class, score, x1, y1, x2, y2)."""
    rows = [np.asarray(r, np.float32).reshape(-1, 6) for r in images]
    return [np.concatenate(rows), np.array([len(r) for r in rows], np.int32)]


REF = detections([(0, 0.9, 10, 10, 30, 30), (1, 0.8, 40, 40, 60, 70), (0, 0.7, 50, 5, 62, 20)],
                 [(2, 0.95, 0, 0, 20, 20), (0, 0.6, 30, 30, 50, 50)])


def judge(dev, ref=REF, nms=NMS, task="detection"):
    return compare_outputs(dev, ref, TOL, task, ["bbox", "bbox_num"], nms)


def test_layout_is_found_by_shape_and_counts():
    layout = find_layout(REF)
    assert (layout.boxes, layout.counts, layout.index) == (0, 1, None)
    assert find_layout([np.zeros((4, 10), np.float32)]) is None  # logits, not detections


def test_swapped_box_order_passes_where_element_wise_comparison_fails():
    rows, counts = REF
    swapped = [rows[[2, 0, 1, 4, 3]], counts]  # same boxes, other order within each image
    problems, figures = judge(swapped)
    assert problems == [] and figures[0]["matched"] == 5 and figures[0]["counts_equal"]
    assert judge(swapped, task=None)[0]  # the old element-wise rule calls the same device wrong


def test_rounding_sized_differences_pass_and_are_measured():
    rows, counts = REF
    dev = rows.copy()
    dev[:, 1] += 2e-4  # scores
    dev[:, 2:] += 0.01  # coordinates: 0.01 / 70 of the image scale
    problems, figures = judge([dev, counts])
    assert problems == []
    assert figures[0]["worst_score_error"] == pytest.approx(2e-4, rel=1e-2)
    assert figures[0]["worst_coordinate_error"] == pytest.approx(0.01 / 70, rel=1e-2)


def test_a_moved_box_or_a_changed_score_fails_naming_it():
    rows, counts = REF
    moved = rows.copy()
    moved[1, 2:] += 0.5  # 0.7% of the image scale: the same detection (IoU 0.96), but not a rounding
    problems, _ = judge([moved, counts])
    assert len(problems) == 1 and "image 0, class 1" in problems[0] and "normalised max abs error" in problems[0]
    moved[1, 2:] += 2.5  # IoU 0.8: no longer the same detection at fp32, on either side
    problems, _ = judge([moved, counts])
    assert len(problems) == 2 and "only on the reference" in problems[0] and "only on the device" in problems[1]
    rescored = rows.copy()
    rescored[3, 1] = 0.9
    problems, _ = judge([rescored, counts])
    assert len(problems) == 1 and "image 1, class 2" in problems[0] and "score 0.9" in problems[0]


def test_a_missing_confident_box_fails_and_the_counts_cannot_hide_it():
    rows, counts = REF
    problems, figures = judge([rows[[0, 2, 3, 4]], np.array([2, 2], np.int32)])
    assert len(problems) == 1
    assert "class 1 box [40.0, 40.0, 60.0, 70.0] score 0.8 only on the reference" in problems[0]
    assert figures[0]["counts_equal"] is False
    # An extra confident box on the device fails the same way.
    extra = detections([(0, 0.9, 10, 10, 30, 30), (1, 0.8, 40, 40, 60, 70), (0, 0.7, 50, 5, 62, 20),
                        (2, 0.85, 0, 40, 10, 60)], [(2, 0.95, 0, 0, 20, 20), (0, 0.6, 30, 30, 50, 50)])
    problems, _ = judge(extra)
    assert len(problems) == 1 and "only on the device" in problems[0]


def test_a_box_at_the_score_threshold_may_be_on_one_side_only():
    ref = detections([(0, 0.9, 10, 10, 30, 30), (1, 0.3002, 40, 40, 60, 70)])
    dev = detections([(0, 0.9, 10, 10, 30, 30)])  # 0.3002 fell just under 0.3 on the device
    problems, figures = judge(dev, ref)
    assert problems == []
    assert figures[0]["excused"] == [{"image": 0, "side": "reference", "class": 1, "score": pytest.approx(0.3002),
                                      "reason": "threshold"}]
    # Without the threshold (no NMS settings known) nothing excuses it.
    assert judge(dev, ref, NmsSettings())[0]
    # Far from the threshold it is a real difference.
    far = detections([(0, 0.9, 10, 10, 30, 30), (1, 0.35, 40, 40, 60, 70)])
    assert judge(dev, far)[0]


def test_keep_top_k_cut_and_nms_suppression_near_the_iou_threshold_are_excused():
    # keep_top_k = 4: the 4th box of the device and the 4th of the reference differ by a rounding.
    ref = detections([(0, 0.9, 0, 0, 10, 10), (0, 0.8, 20, 0, 30, 10), (1, 0.7, 0, 20, 10, 30),
                      (1, 0.50010, 40, 40, 50, 50)])
    dev = detections([(0, 0.9, 0, 0, 10, 10), (0, 0.8, 20, 0, 30, 10), (1, 0.7, 0, 20, 10, 30),
                      (2, 0.50005, 60, 60, 70, 70)])
    problems, figures = judge(dev, ref)
    assert problems == [] and {e["reason"] for e in figures[0]["excused"]} == {"keep_top_k"}
    # Box B overlaps the kept box A with IoU 0.5025: kept on the reference, suppressed on the device.
    a, b = (0, 0.9, 0, 0, 20, 10), (0, 0.6, 6.6, 0, 26.6, 10)
    iou = (20 - 6.6) / (40 - (20 - 6.6))
    assert abs(iou - 0.5) < 5e-3
    problems, figures = judge(detections([a]), detections([a, b]))
    assert problems == [] and figures[0]["excused"][0]["reason"] == "nms_iou"
    # Well above the IoU threshold it would have been suppressed on both sides: a real difference.
    c = (0, 0.6, 2, 0, 22, 10)
    assert judge(detections([a]), detections([a, c]))[0]


def test_a_box_suppressed_on_one_side_only_by_an_excused_box_is_excused():
    # H is kept everywhere. A overlaps H with IoU 0.4975 on the device (kept) and just over 0.5 on the
    # reference (suppressed). On the device A then suppresses C (IoU 0.8 with A); on the reference C is kept.
    h, a, c = (0, 0.9, 0, 0, 20, 10), (0, 0.6, 6.7112, 0, 26.7112, 10), (0, 0.5, 8.9334, 0, 28.9334, 10)
    nms = NmsSettings(score_threshold=0.3, nms_threshold=0.5, keep_top_k=10)
    problems, figures = judge(detections([h, a]), detections([h, c]), nms)
    assert problems == [], problems
    assert {(e["side"], e["reason"]) for e in figures[0]["excused"]} == {("device", "nms_iou"),
                                                                         ("reference", "suppressor")}
    # A C that A could not have suppressed (IoU 0.38 with A) is a real difference.
    far = (0, 0.5, 14.9, 0, 34.9, 10)
    assert judge(detections([h, a]), detections([h, far]), nms)[0]


def test_counts_must_agree_with_the_rows_and_values_must_be_finite():
    rows, counts = REF
    problems, _ = judge([rows, np.array([3, 3], np.int32)])
    assert problems and "do not add up to the 5 detections" in problems[0]
    nan = rows.copy()
    nan[0, 3] = np.nan
    problems, _ = judge([nan, counts])
    assert problems and "NaN/Inf" in problems[0]
    problems, _ = judge([rows[:, :5], counts])
    assert problems and "[K, 6] detections" in problems[0]


def test_a_box_index_output_must_match_for_matched_boxes():
    rows, counts = REF
    index = np.arange(5, dtype=np.int32).reshape(5, 1)
    ref = [rows, index, counts]
    names = ["bbox", "index", "bbox_num"]
    assert compare_outputs([rows, index.copy(), counts], ref, TOL, "detection", names, NMS)[0] == []
    wrong = index.copy()
    wrong[2] = 40
    problems, _ = compare_outputs([rows, wrong, counts], ref, TOL, "detection", names, NMS)
    assert len(problems) == 1 and "box index 40 on the device, 2 on the reference" in problems[0]


def test_other_outputs_of_a_detector_are_still_compared_element_wise():
    rows, counts = REF
    features = np.linspace(-1, 1, 12, dtype=np.float32).reshape(3, 4)
    problems, _ = compare_outputs([rows, counts, features + 0.1], [rows, counts, features], TOL, "detection",
                                  ["bbox", "bbox_num", "feat"], NMS)
    assert len(problems) >= 1 and all(p.startswith("feat:") for p in problems)


def test_nms_settings_in_the_vendor_config(tmp_path):
    path = tmp_path / "vendor.toml"
    path.write_text("[models.det]\ntask = 'detection'\n[models.det.nms]\nscore_threshold = 0.25\nkeep_top_k = 100\n")
    settings = load_config(path).model("det")
    assert settings.task == "detection" and settings.nms == {"score_threshold": 0.25, "keep_top_k": 100}
    path.write_text("[models.det.nms]\nscore_treshold = 0.25\n")
    with pytest.raises(ConfigError, match="unknown NMS setting 'score_treshold'"):
        load_config(path)


def test_the_zoo_detector_is_judged_as_detections_with_its_own_nms_settings(tmp_path):
    """The real model: a permuted or nudged copy of its own output passes, a moved box fails; the suite reads
    the NMS settings from the program's multiclass_nms3 op and never feeds it a non-positive scale_factor."""
    import hwdeploy
    from hwdeploy import zoo
    from hwdeploy_conformance.inputs import InputCase, InputMaker
    from hwdeploy_conformance.runner import _nms

    z = zoo.get("tiny_detector")
    nms = NmsSettings.of(_nms(str(z.model.program), z.model.format))
    assert nms == NmsSettings(score_threshold=pytest.approx(0.3), nms_threshold=0.5, keep_top_k=20)
    predictor = hwdeploy.predictor(z.model, device="cpu")
    maker = InputMaker(predictor.inputs, z.entry.batch_range,
                       lambda batch, seed: z.sample_inputs(batch=batch, seed=seed))
    for i, distribution in enumerate(maker.distributions * 20):
        image, scale = maker.make(InputCase(4, distribution, i))
        assert scale.min() > 0, (distribution, scale)
    ref = predictor.run(*z.sample_inputs(batch=4, seed=3))
    rows, counts = ref
    assert rows.shape[0] == counts.sum() > 8 and len(set(counts.tolist())) > 1  # boxes vary per image
    permuted = [rows[np.random.default_rng(0).permutation(len(rows))], counts]
    # A permutation across images moves boxes between images: that must fail; within each image it must pass.
    offsets = np.concatenate([[0], np.cumsum(counts)])
    within = np.concatenate([offsets[i] + np.random.default_rng(i).permutation(c) for i, c in enumerate(counts)])
    names = predictor.output_names
    assert compare_outputs([rows[within], counts], ref, TOL, "detection", names, nms)[0] == []
    assert compare_outputs(permuted, ref, TOL, "detection", names, nms)[0]
    moved = rows.copy()
    moved[0, 2:] += 0.02 * np.abs(rows[:, 2:]).max()
    assert compare_outputs([moved, counts], ref, TOL, "detection", names, nms)[0]
    predictor.close()


@pytest.mark.slow
def test_the_zoo_detector_is_conformant_on_the_cpu_reference(tmp_path):
    from hwdeploy_conformance import Conformance, build_report

    conformance = Conformance("cpu", ["zoo:tiny_detector"], only=["reference", "parity", "determinism",
                                                                    "perf_accuracy", "concurrency"])
    conformance.run()
    report = build_report(conformance)
    checks = {c["check"]: c for c in report["checks"]}
    assert report["models"][0]["task"] == "detection" and report["models"][0]["nms"]["keep_top_k"] == 20
    for name in ("load", "reference", "parity", "determinism", "perf_accuracy", "concurrency"):
        assert checks[name]["status"] == "passed", (name, checks[name]["message"])
    assert "detections matched by class and IoU" in checks["parity"]["message"]
    last = checks["parity"]["figures"]["last_passing_figures"][0]
    assert last["judged_as"].startswith("detections") and last["matched"] == last["ref_boxes"] > 0
