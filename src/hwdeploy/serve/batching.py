"""Dynamic batching that never mixes rows: which requests may share one run, and how results split back.

Requests are stacked along axis 0 only when every input of the model has a dynamic batch axis, each
request's inputs agree on their row count, and the requests agree on every non-batch dimension and
dtype (their *signature*). A group never exceeds ``max_rows`` rows (the model's batch range) unless one
request alone does (it then runs alone). After a stacked run every output must have exactly the stacked
row count on axis 0, or the group is re-run one request at a time: a model whose outputs are not per-row
is never split by guesswork.
"""

from __future__ import annotations

from typing import Callable, Sequence

import numpy as np

Arrays = list[np.ndarray]


def signature(arrays: Sequence[np.ndarray]) -> tuple | None:
    """What requests must share to be stacked; None when this request cannot be stacked with any other."""
    if not arrays or any(a.ndim == 0 for a in arrays):
        return None
    rows = arrays[0].shape[0]
    if any(a.shape[0] != rows for a in arrays):
        return None
    return tuple((a.dtype.str, a.shape[1:]) for a in arrays)


def plan(requests: Sequence[Arrays], max_rows: int | None) -> list[list[int]]:
    """Groups of request indices to run together, in arrival order within each group."""
    groups: list[list[int]] = []
    open_groups: dict[tuple, tuple[list[int], int]] = {}
    for i, arrays in enumerate(requests):
        sig = signature(arrays)
        if sig is None:
            groups.append([i])
            continue
        rows = arrays[0].shape[0]
        current = open_groups.get(sig)
        if current is not None and (max_rows is None or current[1] + rows <= max_rows):
            current[0].append(i)
            open_groups[sig] = (current[0], current[1] + rows)
            continue
        group = [i]
        groups.append(group)
        open_groups[sig] = (group, rows)
    return groups


def run_batched(run: Callable[[Arrays], Arrays], requests: Sequence[Arrays], max_rows: int | None,
                on_batch: Callable[[int, int], None] | None = None) -> list[tuple[Arrays, int] | Exception]:
    """Run ``requests`` (each a list of checked input arrays) with as few runs as :func:`plan` allows.

    Returns one entry per request: ``(its own outputs, how many requests shared its run)``, or the
    exception its (solo) run raised. ``on_batch(requests, rows)`` is called once per run.
    """
    results: list = [None] * len(requests)

    def solo(i: int) -> None:
        try:
            results[i] = (run(requests[i]), 1)
            if on_batch:
                on_batch(1, requests[i][0].shape[0] if requests[i][0].ndim else 1)
        except Exception as exc:  # reported to that request only
            results[i] = exc

    for group in plan(requests, max_rows):
        if len(group) == 1:
            solo(group[0])
            continue
        counts = [requests[i][0].shape[0] for i in group]
        total = sum(counts)
        stacked = [np.concatenate([requests[i][k] for i in group], axis=0) for k in range(len(requests[group[0]]))]
        try:
            outputs = run(stacked)
        except Exception:  # one request's fault must not fail its neighbours: each runs alone
            outputs = None
        if outputs is None or any(o.ndim == 0 or o.shape[0] != total for o in outputs):
            for i in group:
                solo(i)
            continue
        if on_batch:
            on_batch(len(group), total)
        bounds = np.cumsum([0] + counts)
        for i, start, stop in zip(group, bounds[:-1], bounds[1:]):
            results[i] = ([o[start:stop] for o in outputs], len(group))
    return results
