"""Comparing a device's outputs with the CPU reference's.

All metrics are relative (the reference's own scale sets the yardstick), so
they mean the same thing for logits of 1e3 and probabilities of 1e-3; the
suite separately refuses reference outputs that are too small to judge.
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from hwdeploy.sdk.testing import rel_l2  # ||dev - ref|| / ||ref||: the one implementation, shared with plugin tests

from hwdeploy_conformance.config import Tolerance
from hwdeploy_conformance.detection import NmsSettings, compare_detections, find_layout


def _flat(a: np.ndarray) -> np.ndarray:
    return np.asarray(a, dtype=np.float64).ravel()


def normalised_max_abs(dev: np.ndarray, ref: np.ndarray) -> float:
    """max|dev - ref| / max|ref|: the worst single element, on the reference's scale."""
    d, r = _flat(dev), _flat(ref)
    scale = np.max(np.abs(r)) if r.size else 0.0
    worst = np.max(np.abs(d - r)) if r.size else 0.0
    if scale == 0:
        return 0.0 if worst == 0 else float("inf")
    return float(worst / scale)


def cosine(dev: np.ndarray, ref: np.ndarray) -> float:
    d, r = _flat(dev), _flat(ref)
    nd, nr = np.linalg.norm(d), np.linalg.norm(r)
    if nd == 0 or nr == 0:
        return 1.0 if nd == nr else 0.0
    return float(np.dot(d, r) / (nd * nr))


def rms(a: np.ndarray) -> float:
    f = _flat(a)
    return float(np.sqrt(np.mean(f * f))) if f.size else 0.0


def topk_agreement(dev: np.ndarray, ref: np.ndarray, axis: int, tie_margin: float) -> dict[str, Any]:
    """Top-1 agreement and mean top-5 overlap along the class ``axis``.

    Positions where the reference's best two classes are closer than
    ``tie_margin`` (in units of the reference's max magnitude) are excluded
    from top-1: an error inside tolerance may legitimately swap them.
    """
    d = np.moveaxis(np.asarray(dev, dtype=np.float64), axis, -1)
    r = np.moveaxis(np.asarray(ref, dtype=np.float64), axis, -1)
    classes = r.shape[-1]
    d = d.reshape(-1, classes)
    r = r.reshape(-1, classes)
    order = np.argsort(-r, axis=1, kind="stable")
    best, second = r[np.arange(len(r)), order[:, 0]], r[np.arange(len(r)), order[:, 1]]
    scale = float(np.max(np.abs(r))) or 1.0
    decided = (best - second) > tie_margin * scale
    agree = np.argmax(d, axis=1) == order[:, 0]
    top1 = float(agree[decided].mean()) if decided.any() else 1.0
    out = {"top1": top1, "rows": int(len(r)), "ties_excluded": int((~decided).sum()),
           "top1_disagreements": int((~agree & decided).sum())}
    if classes > 5:
        k = 5
        dev_top = np.argsort(-d, axis=1, kind="stable")[:, :k]
        overlap = [len(set(a) & set(b)) / k for a, b in zip(dev_top, order[:, :k])]
        out["top5"] = float(np.mean(overlap))
    return out


def class_axis(task: str | None, shape: Sequence[int], dtype: np.dtype) -> int | None:
    """The axis holding class scores for top-k, or None when top-k does not apply."""
    if np.dtype(dtype).kind != "f" or task not in ("classification", "segmentation"):
        return None
    if task == "classification" and len(shape) == 2 and shape[1] > 1:
        return 1
    if task == "segmentation" and len(shape) == 4 and shape[1] > 1:
        return 1
    return None


def compare_outputs(dev: Sequence[np.ndarray], ref: Sequence[np.ndarray], tol: Tolerance, task: str | None,
                    names: Sequence[str] | None = None,
                    nms: NmsSettings | None = None) -> tuple[list[str], list[dict[str, Any]]]:
    """Judge every output; returns (problems, per-output figures). No problems means within tolerance.

    A detector's NMS outputs (``task="detection"``) are judged as sets of boxes
    (:mod:`hwdeploy_conformance.detection`), everything else element-wise.
    """
    problems: list[str] = []
    figures: list[dict[str, Any]] = []
    if len(dev) != len(ref):
        return [f"device returned {len(dev)} outputs, the reference {len(ref)}"], figures
    name_of = lambda i: names[i] if names and i < len(names) else f"output{i}"  # noqa: E731
    judged: set[int] = set()
    layout = find_layout(ref) if task == "detection" else None
    if layout is not None:
        found, fig = compare_detections(dev, ref, layout, tol, nms or NmsSettings(), name_of(layout.boxes))
        problems += found
        figures.append(fig)
        for extra in (layout.counts, layout.index):
            if extra is not None:
                figures.append({"output": name_of(extra), "judged_as": f"part of {name_of(layout.boxes)}"})
        judged = {i for i in (layout.boxes, layout.counts, layout.index) if i is not None}
    for i, (d, r) in enumerate(zip(dev, ref)):
        if i in judged:
            continue
        name = name_of(i)
        d, r = np.asarray(d), np.asarray(r)
        fig: dict[str, Any] = {"output": name, "shape": list(r.shape), "dtype": str(r.dtype)}
        figures.append(fig)
        if d.shape != r.shape:
            problems.append(f"{name}: shape {list(d.shape)} on the device, {list(r.shape)} on the reference")
            continue
        if r.dtype.kind in "iub":
            match = float(np.mean(d == r)) if r.size else 1.0
            fig["int_match"] = match
            if match < tol.int_match:
                problems.append(f"{name}: {match:.4%} of integer elements equal the reference"
                                f" (need >= {tol.int_match:.4%})")
            continue
        finite_ref = np.isfinite(r)
        bad = ~np.isfinite(d) & finite_ref
        if bad.any():
            fig["nonfinite"] = int(bad.sum())
            problems.append(f"{name}: {int(bad.sum())} NaN/Inf element(s) where the reference is finite")
            continue
        d, r = np.where(finite_ref, d, 0), np.where(finite_ref, r, 0)
        fig.update(rel_l2=rel_l2(d, r), max_abs=normalised_max_abs(d, r), cosine=cosine(d, r), ref_rms=rms(r))
        if fig["rel_l2"] > tol.rel_l2:
            problems.append(f"{name}: relative L2 error {fig['rel_l2']:.4g} > {tol.rel_l2:g}")
        if fig["max_abs"] > tol.max_abs:
            problems.append(f"{name}: normalised max abs error {fig['max_abs']:.4g} > {tol.max_abs:g}")
        if fig["cosine"] < tol.cosine:
            problems.append(f"{name}: cosine similarity {fig['cosine']:.7f} < {tol.cosine}")
        axis = class_axis(task, r.shape, r.dtype)
        if axis is not None:
            topk = topk_agreement(d, r, axis, tie_margin=tol.max_abs)
            fig.update(topk)
            if topk["top1"] < tol.top1:
                problems.append(f"{name}: top-1 agreement {topk['top1']:.4f} < {tol.top1}"
                                f" ({topk['top1_disagreements']} of {topk['rows']} rows differ)")
            if "top5" in topk and topk["top5"] < tol.top5:
                problems.append(f"{name}: top-5 overlap {topk['top5']:.4f} < {tol.top5}")
    return problems, figures


def max_rel_l2(a: Sequence[np.ndarray], b: Sequence[np.ndarray]) -> float:
    """The worst relative L2 difference over matching outputs (integer outputs: fraction differing)."""
    worst = 0.0
    for x, y in zip(a, b):
        x, y = np.asarray(x), np.asarray(y)
        if x.shape != y.shape:
            return float("inf")
        if y.dtype.kind in "iub":
            worst = max(worst, float(np.mean(x != y)) if y.size else 0.0)
        else:
            worst = max(worst, rel_l2(np.nan_to_num(x), np.nan_to_num(y)))
    return worst
