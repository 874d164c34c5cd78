"""A robust trend of a series (RSS per create/close cycle): the Theil–Sen slope and its confidence bound.

The Theil–Sen slope is the median of the slopes between every pair of points, so an allocator pool that
swings up and down does not move it, while a leak (growth every cycle) does. Its confidence interval
(Sen 1968) comes from the order statistics of the same pairwise slopes and the variance of Kendall's S:
distribution-free for independent noise. numpy only.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Sequence

import numpy as np

#: One-sided 99% normal quantile: a lifecycle check fails when even the slope's 99% lower bound is too high.
Z_99 = 2.3263478740408408


@dataclass(frozen=True)
class Trend:
    points: int
    slope: float  # Theil–Sen: median pairwise slope (units of y per unit of x)
    intercept: float  # median of y - slope * x
    lower: float  # one-sided lower confidence bound of the slope (-inf when too few points to say)
    upper: float  # one-sided upper confidence bound
    confidence: float

    def to_dict(self) -> dict[str, float]:
        return asdict(self)


def theil_sen(y: Sequence[float], x: Sequence[float] | None = None, z: float = Z_99,
              confidence: float = 0.99) -> Trend:
    """The Theil–Sen fit of ``y`` against ``x`` (default 0, 1, 2, ...) with one-sided bounds at quantile ``z``."""
    y = np.asarray(y, dtype=np.float64)
    x = np.arange(len(y), dtype=np.float64) if x is None else np.asarray(x, dtype=np.float64)
    n = len(y)
    if n < 2:
        return Trend(n, 0.0, float(y[0]) if n else 0.0, -math.inf, math.inf, confidence)
    i, j = np.triu_indices(n, k=1)
    dx = x[j] - x[i]
    keep = dx != 0
    slopes = np.sort((y[j] - y[i])[keep] / dx[keep])
    pairs = len(slopes)
    slope = float(np.median(slopes))
    intercept = float(np.median(y - slope * x))
    # Var(S) of Kendall's statistic (no tie correction: ties only make the bound conservative).
    c = z * math.sqrt(n * (n - 1) * (2 * n + 5) / 18.0)
    # Sen: the bounds are the M1-th and (M2+1)-th smallest slopes (1-based), M1,2 = (N -+ C) / 2; rounded outwards.
    lo_rank = int(math.floor((pairs - c) / 2)) - 1
    hi_rank = int(math.ceil((pairs + c) / 2))
    lower = float(slopes[lo_rank]) if lo_rank >= 0 else -math.inf
    upper = float(slopes[hi_rank]) if hi_rank < pairs else math.inf
    return Trend(n, slope, intercept, lower, upper, confidence)
