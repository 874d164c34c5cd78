"""Detection-aware parity: a detector's NMS output is a *set* of boxes, compared as one.

Element-wise comparison of ``multiclass_nms3`` outputs fails correct devices: one box order swapped
between two equal scores, or one score a hair either side of the threshold, shifts every later row.
Here boxes are matched per image and class by IoU (highest reference score first; at least 0.9 at fp32,
0.5 at reduced precision); matched pairs must agree in score and coordinates within the tolerance; a
detection found in only one of the two outputs is excused only when a rounding-sized difference explains it:

- ``threshold``: its score is within the score tolerance of NMS's score threshold;
- ``keep_top_k``: that image filled ``keep_top_k`` in the other output and its score is within the
  tolerance of the lowest score kept there;
- ``nms_iou``: a higher-scoring box of its class in the other output overlaps it with an IoU within the
  IoU margin of NMS's IoU threshold (suppressed on one side, kept on the other);
- ``suppressor``: a higher-scoring box of its class that overlaps it above the IoU threshold is itself an
  excused one-sided detection (it suppressed this box on one side only).

Box counts are judged exactly: each image's count difference must be explained by excused detections,
and the device's count output must agree with the rows it returned. A matched pair's box index output
(``multiclass_nms3``'s ``index``), when the model returns it, must be equal.

Layout (PaddleDetection's export): a float output ``[K, 6]`` of rows ``class, score, x1, y1, x2, y2``
and an integer output ``[N]`` of boxes per image whose sum is ``K``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np

from hwdeploy_conformance.config import NMS_FIELDS, Tolerance


def match_iou(tol: Tolerance) -> float:
    """How much a device's box must overlap the reference's to be the same detection: at fp32 (boxes within
    a rounding) 0.9, so a neighbour that NMS suppressed on one side is never taken for it; at reduced
    precision down to COCO's 0.5."""
    return min(0.9, max(0.5, 1.0 - 100 * tol.max_abs))


@dataclass(frozen=True)
class NmsSettings:
    """What NMS did (the model's ``multiclass_nms3`` attributes): what may legitimately flip a detection."""

    score_threshold: float | None = None
    nms_threshold: float | None = None
    keep_top_k: int | None = None

    @classmethod
    def of(cls, table: dict[str, Any] | None) -> "NmsSettings":
        table = table or {}
        keep = table.get("keep_top_k")
        return cls(*(None if table.get(k) is None else float(table[k]) for k in NMS_FIELDS[:2]),
                   None if keep is None or int(keep) < 0 else int(keep))


@dataclass(frozen=True)
class Layout:
    boxes: int  # index of the [K, 6] output
    counts: int | None  # index of the [N] integer output
    index: int | None  # index of the [K, 1] integer box-index output


def find_layout(ref: Sequence[np.ndarray]) -> Layout | None:
    """Where the NMS outputs are among the reference's outputs (None: not an NMS-style output)."""
    arrays = [np.asarray(r) for r in ref]
    boxes = [i for i, r in enumerate(arrays) if r.dtype.kind == "f" and r.ndim == 2 and r.shape[1] == 6]
    if len(boxes) != 1:
        return None
    rows = arrays[boxes[0]].shape[0]
    counts = [i for i, r in enumerate(arrays) if r.dtype.kind in "iu" and r.ndim == 1 and int(r.sum()) == rows]
    index = [i for i, r in enumerate(arrays) if r.dtype.kind in "iu" and r.shape == (rows, 1) and i not in counts]
    return Layout(boxes[0], counts[0] if counts else None, index[0] if index else None)


def iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU of box ``a`` [4] with each of ``b`` [M, 4] (x1, y1, x2, y2; inverted boxes have no area)."""
    ix = np.clip(np.minimum(a[2], b[:, 2]) - np.maximum(a[0], b[:, 0]), 0, None)
    iy = np.clip(np.minimum(a[3], b[:, 3]) - np.maximum(a[1], b[:, 1]), 0, None)
    inter = ix * iy
    area = lambda x: np.clip(x[..., 2] - x[..., 0], 0, None) * np.clip(x[..., 3] - x[..., 1], 0, None)  # noqa: E731
    union = area(a) + area(b) - inter
    return np.where(union > 0, inter / np.where(union > 0, union, 1), 0.0)


def _split(rows: np.ndarray, counts: np.ndarray | None) -> list[np.ndarray]:
    if counts is None:
        return [rows]
    edges = np.cumsum(np.asarray(counts, dtype=np.int64))[:-1]
    return np.split(rows, edges)


def compare_detections(dev: Sequence[np.ndarray], ref: Sequence[np.ndarray], layout: Layout, tol: Tolerance,
                       nms: NmsSettings, name: str = "bbox") -> tuple[list[str], dict[str, Any]]:
    """Judge a detector's NMS outputs as sets of boxes; returns (problems, figures)."""
    r_rows = np.asarray(ref[layout.boxes], dtype=np.float64)
    d_rows = np.asarray(dev[layout.boxes])
    problems: list[str] = []
    fig: dict[str, Any] = {"output": name, "judged_as": "detections (matched by class and IoU)",
                           "ref_boxes": int(r_rows.shape[0]), "nms": {k: getattr(nms, k) for k in NMS_FIELDS}}
    if d_rows.ndim != 2 or d_rows.shape[1:] != (6,):
        return [f"{name}: shape {list(d_rows.shape)} on the device, [K, 6] detections on the reference"], fig
    if not np.all(np.isfinite(d_rows)):
        return [f"{name}: {int((~np.isfinite(d_rows)).sum())} NaN/Inf value(s) in the device's detections"], fig
    d_rows = d_rows.astype(np.float64)
    fig["dev_boxes"] = int(d_rows.shape[0])
    r_counts = d_counts = None
    if layout.counts is not None:
        r_counts = np.asarray(ref[layout.counts]).astype(np.int64)
        d_counts = np.asarray(dev[layout.counts])
        if d_counts.shape != r_counts.shape or d_counts.dtype.kind not in "iu":
            return [f"{name}: box counts of shape {list(d_counts.shape)} ({d_counts.dtype}) on the device,"
                    f" {list(r_counts.shape)} ({r_counts.dtype}) on the reference"], fig
        d_counts = d_counts.astype(np.int64)
        if int(d_counts.sum()) != d_rows.shape[0] or (d_counts < 0).any():
            return [f"{name}: the device's box counts {d_counts.tolist()} do not add up to the"
                    f" {d_rows.shape[0]} detections it returned"], fig
        fig.update(ref_counts=r_counts.tolist(), dev_counts=d_counts.tolist(),
                   counts_equal=bool(np.array_equal(r_counts, d_counts)))
    r_index = d_index = None
    if layout.index is not None:
        r_index = np.asarray(ref[layout.index]).reshape(-1)
        d_index = np.asarray(dev[layout.index]).reshape(-1)
        if d_index.shape[0] != d_rows.shape[0]:
            return [f"{name}: {d_index.shape[0]} box indices on the device for {d_rows.shape[0]} detections"], fig
    scale = float(np.max(np.abs(r_rows[:, 2:]))) if r_rows.size else 1.0
    scale = scale or 1.0
    score_margin = tol.max_abs
    iou_margin = min(0.1, 10 * tol.max_abs)
    fig.update(coordinate_scale=scale, score_margin=score_margin, iou_margin=iou_margin, match_iou=match_iou(tol))
    worst_score = worst_coord = 0.0
    min_iou = 1.0
    matched = 0
    excused: list[dict[str, Any]] = []
    r_offsets = np.concatenate([[0], np.cumsum(r_counts)]) if r_counts is not None else np.array([0])
    d_offsets = np.concatenate([[0], np.cumsum(d_counts)]) if d_counts is not None else np.array([0])
    for image, (r, d) in enumerate(zip(_split(r_rows, r_counts), _split(d_rows, d_counts))):
        pairs, r_only, d_only = _match(r, d, fig["match_iou"])
        matched += len(pairs)
        for i, j in pairs:
            score_err = abs(d[j, 1] - r[i, 1])
            coord_err = float(np.max(np.abs(d[j, 2:] - r[i, 2:]))) / scale
            worst_score, worst_coord = max(worst_score, score_err), max(worst_coord, coord_err)
            min_iou = min(min_iou, float(iou(r[i, 2:], d[j, 2:][None])[0]))
            where = f"image {image}, class {int(r[i, 0])}, reference score {r[i, 1]:.4f}"
            if score_err > score_margin:
                problems.append(f"{name}: {where}: score {d[j, 1]:.6g} on the device, {r[i, 1]:.6g} on the"
                                f" reference (|diff| {score_err:.3g} > {score_margin:g})")
            if coord_err > tol.max_abs:
                problems.append(f"{name}: {where}: box {np.round(d[j, 2:], 3).tolist()} on the device,"
                                f" {np.round(r[i, 2:], 3).tolist()} on the reference (normalised max abs error"
                                f" {coord_err:.3g} > {tol.max_abs:g})")
            if r_index is not None and r_index[r_offsets[image] + i] != d_index[d_offsets[image] + j]:
                problems.append(f"{name}: {where}: box index {int(d_index[d_offsets[image] + j])} on the device,"
                                f" {int(r_index[r_offsets[image] + i])} on the reference")
        reasons = {"reference": _excuses(r, d, r_only, nms, score_margin, iou_margin),
                   "device": _excuses(d, r, d_only, nms, score_margin, iou_margin)}
        _excuse_suppressed(r, d, r_only, reasons["reference"], reasons["device"], nms, score_margin, iou_margin)
        _excuse_suppressed(d, r, d_only, reasons["device"], reasons["reference"], nms, score_margin, iou_margin)
        for side, own, only in (("reference", r, r_only), ("device", d, d_only)):
            for k in only:
                if k in reasons[side]:
                    excused.append({"image": image, "side": side, "class": int(own[k, 0]),
                                    "score": float(own[k, 1]), "reason": reasons[side][k]})
                else:
                    problems.append(f"{name}: image {image}: class {int(own[k, 0])} box"
                                    f" {np.round(own[k, 2:], 3).tolist()} score {own[k, 1]:.6g} only on the {side},"
                                    f" and no rounding-sized difference explains it (score threshold"
                                    f" {nms.score_threshold}, keep_top_k {nms.keep_top_k}, IoU threshold"
                                    f" {nms.nms_threshold})")
    fig.update(matched=matched, worst_score_error=worst_score, worst_coordinate_error=worst_coord,
               min_matched_iou=min_iou if matched else None, excused=excused[:20], excused_count=len(excused))
    return problems, fig


def _match(r: np.ndarray, d: np.ndarray, min_iou: float) -> tuple[list[tuple[int, int]], list[int], list[int]]:
    """Greedy matching per class, highest reference score first, each device box used once."""
    pairs: list[tuple[int, int]] = []
    used = np.zeros(len(d), dtype=bool)
    for i in np.argsort(-r[:, 1], kind="stable"):
        candidates = np.flatnonzero((d[:, 0] == r[i, 0]) & ~used)
        if not len(candidates):
            continue
        overlaps = iou(r[i, 2:], d[candidates, 2:])
        best = int(np.argmax(overlaps))
        if overlaps[best] >= min_iou:
            used[candidates[best]] = True
            pairs.append((int(i), int(candidates[best])))
    matched_r = {i for i, _ in pairs}
    return pairs, [i for i in range(len(r)) if i not in matched_r], [j for j in range(len(d)) if not used[j]]


def _excuses(own: np.ndarray, other: np.ndarray, only: list[int], nms: NmsSettings, score_margin: float,
             iou_margin: float) -> dict[int, str]:
    """Which one-sided detections of ``own`` a rounding-sized difference explains, and how."""
    reasons: dict[int, str] = {}
    for k in only:
        score, cls = own[k, 1], own[k, 0]
        if nms.score_threshold is not None and abs(score - nms.score_threshold) <= score_margin:
            reasons[k] = "threshold"
        elif nms.keep_top_k is not None and len(other) >= nms.keep_top_k and len(other) \
                and score <= other[:, 1].min() + score_margin:
            reasons[k] = "keep_top_k"
        elif nms.nms_threshold is not None:
            rivals = other[(other[:, 0] == cls) & (other[:, 1] >= score - score_margin)]
            if len(rivals) and np.any(np.abs(iou(own[k, 2:], rivals[:, 2:]) - nms.nms_threshold) <= iou_margin):
                reasons[k] = "nms_iou"
    return reasons


def _excuse_suppressed(own: np.ndarray, other: np.ndarray, only: list[int], own_reasons: dict[int, str],
                       other_reasons: dict[int, str], nms: NmsSettings, score_margin: float,
                       iou_margin: float) -> None:
    """Excuse a one-sided box that an excused one-sided box of the other output suppressed there."""
    if nms.nms_threshold is None or not other_reasons:
        return
    suppressors = np.array(sorted(other_reasons))
    for k in only:
        if k in own_reasons:
            continue
        rivals = other[suppressors]
        rivals = rivals[(rivals[:, 0] == own[k, 0]) & (rivals[:, 1] >= own[k, 1] - score_margin)]
        if len(rivals) and np.any(iou(own[k, 2:], rivals[:, 2:]) > nms.nms_threshold - iou_margin):
            own_reasons[k] = "suppressor"
