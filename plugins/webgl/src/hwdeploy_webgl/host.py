"""The host stage of a WebGL model: what Paddle.js cannot run, computed by hwdeploy on the CPU after the page.

Paddle.js feeds one float32 input, returns one output and has no NMS kernel. A detector such as PP-PicoDet
(``image`` and ``scale_factor`` in, ``multiclass_nms3`` at the end) therefore runs in two stages: the page
computes everything that depends on the image alone, up to the tensors the NMS reads (the *exports*, packed
into the page's one output); this module then runs the rest of the program on the host with numpy — the
ops that read a second input or an NMS output, and the NMS itself. The converter only puts ops here that
:data:`KERNELS` implements, and the receipt lists every one of them as run on the host CPU, never as WebGL.

The program is the converter's ``host`` record (JSON): ``inputs`` (the model's other inputs), ``exports``
(references and shapes of what the page returns), ``consts`` (constant operands), ``ops`` and ``fetch``.
"""

from __future__ import annotations

from typing import Any, Callable, Sequence

import numpy as np

from hwdeploy.errors import BackendError, InputError

Kernel = Callable[[list[Any], dict[str, Any]], list[Any]]
KERNELS: dict[str, Kernel] = {}


def kernel(*names: str):
    def register(fn: Kernel) -> Kernel:
        for name in names:
            KERNELS[name] = fn
        return fn
    return register


def run(program: dict[str, Any], exports: Sequence[np.ndarray], inputs: Sequence[np.ndarray]) -> list[np.ndarray]:
    """Run the host ``program`` on the page's ``exports`` and the model's other ``inputs``; return the fetches."""
    values: dict[int, Any] = {}
    for spec, array in zip(program["exports"], exports):
        values[spec["ref"]] = array
    for spec, array in zip(program["inputs"], inputs):
        values[spec["ref"]] = array
    for ref, const in program["consts"].items():
        values[int(ref)] = np.asarray(const["data"], dtype=const["dtype"]).reshape(const["shape"])
    for op in program["ops"]:
        args = [values[r] if r is not None else None for r in op["inputs"]]
        try:
            outs = KERNELS[op["type"]](args, op["attrs"])
        except (ValueError, IndexError) as exc:  # shapes the program did not foresee: the inputs' fault
            raise InputError(f"host stage of the WebGL model, {op['type']}: {exc}") from exc
        for ref, out in zip(op["outputs"], outs):
            if ref is not None:
                values[ref] = out
    try:
        return [np.ascontiguousarray(values[f["ref"]]) for f in program["fetch"]]
    except KeyError as exc:
        raise BackendError(f"the host stage computed no value {exc} for a model output (converter bug)") from None


# ---------------------------------------------------------------- kernels: Paddle's semantics, numpy's arithmetic

@kernel("pd_op.fetch")
def _fetch(args, attrs):
    return [args[0]]


@kernel("builtin.combine")
def _combine(args, attrs):
    return [list(args)]


@kernel("builtin.split")
def _split_list(args, attrs):
    return list(args[0])


def _binary(fn) -> Kernel:
    def compute(args, attrs):  # numpy broadcasting is Paddle's for these ops
        x, y = np.asarray(args[0]), np.asarray(args[1])
        with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
            return [fn(x, y).astype(np.result_type(x, y), copy=False)]
    return compute


KERNELS.update({name: _binary(fn) for name, fn in {
    "pd_op.add": np.add, "pd_op.subtract": np.subtract, "pd_op.multiply": np.multiply, "pd_op.divide": np.divide,
    "pd_op.maximum": np.maximum, "pd_op.minimum": np.minimum}.items()})


@kernel("pd_op.scale")
def _scale(args, attrs):
    x = np.asarray(args[0])
    scale = float(np.asarray(args[1]).reshape(-1)[0]) if len(args) > 1 and args[1] is not None \
        else float(attrs.get("scale", 1.0))
    bias = float(attrs.get("bias", 0.0))
    out = x * scale + bias if attrs.get("bias_after_scale", True) else (x + bias) * scale
    return [out.astype(x.dtype, copy=False)]


@kernel("pd_op.cast")
def _cast(args, attrs):
    return [np.asarray(args[0]).astype(attrs["dtype"])]


@kernel("pd_op.reshape")
def _reshape(args, attrs):
    x = np.asarray(args[0])
    shape = [int(s) for s in np.asarray(args[1]).reshape(-1)]
    shape = [x.shape[i] if s == 0 else s for i, s in enumerate(shape)]  # 0 copies the input's dim
    return [x.reshape(shape)]


@kernel("pd_op.unsqueeze")
def _unsqueeze(args, attrs):
    x = np.asarray(args[0])
    for axis in sorted(int(a) for a in np.asarray(args[1]).reshape(-1)):
        x = np.expand_dims(x, axis if axis >= 0 else axis + x.ndim + 1)
    return [x]


@kernel("pd_op.squeeze")
def _squeeze(args, attrs):
    x = np.asarray(args[0])
    axes = [int(a) % x.ndim for a in np.asarray(args[1]).reshape(-1)] if x.ndim else []
    return [np.squeeze(x, axis=tuple(a for a in axes if x.shape[a] == 1)) if axes else np.squeeze(x)]


@kernel("pd_op.concat")
def _concat(args, attrs):
    axis = int(np.asarray(args[1]).reshape(-1)[0])
    return [np.concatenate([np.asarray(a) for a in args[0]], axis=axis)]


@kernel("pd_op.slice")
def _slice(args, attrs):
    x = np.asarray(args[0])
    starts = [int(s) for s in np.asarray(args[1]).reshape(-1)]
    ends = [int(e) for e in np.asarray(args[2]).reshape(-1)]
    index = [slice(None)] * x.ndim
    for axis, start, end in zip(attrs["axes"], starts, ends):
        index[axis] = slice(start, end)
    out = x[tuple(index)]
    drop = [int(a) for a in attrs.get("decrease_axis", [])]
    return [np.squeeze(out, axis=tuple(drop)) if drop else out]


@kernel("pd_op.multiclass_nms3")
def _multiclass_nms3(args, attrs):
    boxes, scores, rois_num = args
    if rois_num is not None:
        raise BackendError("multiclass_nms3 with rois_num (LoD-style 2-D scores) is not supported on the host")
    return list(multiclass_nms(np.asarray(boxes, np.float32), np.asarray(scores, np.float32), attrs))


def embedding_rows(table: np.ndarray, ids: np.ndarray, padding_idx: int) -> np.ndarray:
    """Paddle's embedding: the rows of ``table`` at ``ids`` (already checked in range), zero at ``padding_idx``."""
    rows = table[ids]  # a new array: the table is never written
    if padding_idx >= 0:
        rows[ids == padding_idx] = 0
    return rows


# ---------------------------------------------------------------- multiclass NMS

def iou_with(box: np.ndarray, others: np.ndarray, normalized: bool) -> np.ndarray:
    """IoU of ``box`` [4] with each of ``others`` [K, 4] (x1, y1, x2, y2), in float32 as Paddle's kernel computes
    it: disjoint boxes 0, a box with x2 < x1 or y2 < y1 has no area, pixel boxes (``normalized=False``) count
    both edges (``+1``)."""
    one = np.float32(0.0 if normalized else 1.0)
    disjoint = ((others[:, 0] > box[2]) | (others[:, 2] < box[0]) | (others[:, 1] > box[3])
                | (others[:, 3] < box[1]))
    inter_w = np.minimum(box[2], others[:, 2]) - np.maximum(box[0], others[:, 0]) + one
    inter_h = np.minimum(box[3], others[:, 3]) - np.maximum(box[1], others[:, 1]) + one
    inter = inter_w * inter_h

    def area(b):
        valid = (b[..., 2] >= b[..., 0]) & (b[..., 3] >= b[..., 1])
        return np.where(valid, (b[..., 2] - b[..., 0] + one) * (b[..., 3] - b[..., 1] + one), np.float32(0))

    with np.errstate(divide="ignore", invalid="ignore"):
        iou = inter / (area(box) + area(others) - inter)
    return np.where(disjoint, np.float32(0), iou).astype(np.float32)


def _greedy_nms(boxes: np.ndarray, scores: np.ndarray, attrs: dict[str, Any]) -> list[int]:
    """One class of one image: indices kept, in the order kept (descending score, ties in index order)."""
    candidates = np.flatnonzero(scores > np.float32(attrs["score_threshold"]))
    order = candidates[np.argsort(-scores[candidates], kind="stable")]
    top_k = int(attrs["nms_top_k"])
    if top_k > -1:
        order = order[:top_k]
    threshold, eta = np.float32(attrs["nms_threshold"]), np.float32(attrs.get("nms_eta", 1.0))
    normalized = bool(attrs.get("normalized", True))
    kept: list[int] = []
    for idx in order:
        if kept:
            overlap = iou_with(boxes[idx], boxes[kept], normalized)
            if not np.all(overlap <= threshold):  # NaN (a degenerate pair) is not <=: the box is dropped
                continue
        kept.append(int(idx))
        if eta < 1 and threshold > 0.5:
            threshold = np.float32(threshold * eta)
    return kept


def multiclass_nms(boxes: np.ndarray, scores: np.ndarray,
                   attrs: dict[str, Any]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Paddle's ``multiclass_nms3`` for boxes ``[N, M, 4]`` and scores ``[N, C, M]``.

    Returns ``(out [K, 6], index [K, 1], rois_num [N])``: rows ``(label, score, x1, y1, x2, y2)`` per image,
    classes ascending and, within a class, in the order NMS kept them; ``index`` counts boxes from the
    batch's first (image ``i``'s box ``m`` is ``i * M + m``); ``rois_num`` the rows of each image (int32).
    Per image: every class but ``background_label`` keeps its boxes above ``score_threshold``, at most
    ``nms_top_k`` of them by score, greedily dropping any whose IoU with a kept one exceeds the (adaptive,
    ``nms_eta``) threshold; over ``keep_top_k`` in all, the best ``keep_top_k`` by score stay.
    """
    if boxes.ndim != 3 or boxes.shape[2] != 4 or scores.ndim != 3 or scores.shape[2] != boxes.shape[1] \
            or scores.shape[0] != boxes.shape[0]:
        raise ValueError(f"boxes {list(boxes.shape)} and scores {list(scores.shape)}: expected [N, M, 4] and"
                         " [N, C, M]")
    n, classes, m = scores.shape
    keep_top_k, background = int(attrs["keep_top_k"]), int(attrs.get("background_label", -1))
    rows, index, counts = [], [], []
    for i in range(n):
        per_class = {c: _greedy_nms(boxes[i], scores[i, c], attrs) for c in range(classes) if c != background}
        total = sum(len(v) for v in per_class.values())
        if keep_top_k > -1 and total > keep_top_k:
            ranked = [(scores[i, c, idx], c, idx) for c in sorted(per_class) for idx in per_class[c]]
            order = sorted(range(len(ranked)), key=lambda k: -ranked[k][0])  # stable: ties keep their order
            best = [ranked[k] for k in order[:keep_top_k]]
            per_class = {c: [idx for _s, label, idx in best if label == c] for c in sorted({b[1] for b in best})}
        count = 0
        for c in sorted(per_class):
            for idx in per_class[c]:
                rows.append(np.concatenate([np.float32([c, scores[i, c, idx]]), boxes[i, idx]]))
                index.append(i * m + idx)
                count += 1
        counts.append(count)
    out = np.stack(rows).astype(np.float32) if rows else np.zeros((0, 6), np.float32)
    return out, np.asarray(index, np.int32).reshape(-1, 1), np.asarray(counts, np.int32)
