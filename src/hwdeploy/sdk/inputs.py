"""Inputs made up for a model's input specs: warm-up runs, benchmarks, ``hwdeploy run`` without ``--input``.

One rule everywhere, so every backend sees the same numbers for the same seed: dynamic dims become ``batch``
(axis 0) or ``other_dims``; floats ~ N(0, 1); integers in [0, 2), valid ids for any vocabulary; bools 0/1.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from hwdeploy.contract.model import TensorSpec


def random_inputs(specs: Sequence[TensorSpec], batch: int = 1, seed: int = 0, other_dims: int = 16) -> list[np.ndarray]:
    """One deterministic array per spec (see the module docstring for the rule)."""
    rng = np.random.default_rng(seed)
    arrays = []
    for spec in specs:
        shape = tuple((batch if axis == 0 else other_dims) if dim < 0 else dim for axis, dim in enumerate(spec.shape))
        dtype = np.dtype(spec.dtype or "float32")
        if dtype.kind == "f":
            arrays.append(rng.standard_normal(shape).astype(dtype))
        else:  # integers: token ids, indices; bools
            arrays.append(rng.integers(0, 2, shape).astype(dtype))
    return arrays
