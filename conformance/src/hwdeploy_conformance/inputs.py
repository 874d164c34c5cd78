"""Model inputs drawn with Hypothesis: batch sizes across the model's range, realistic values.

Hypothesis draws a small :class:`InputCase` (batch, distribution, seed) and
numpy turns it into arrays: drawing megabytes of floats element by element
would be slow, while a case of three numbers shrinks well (a failure is
reported at the smallest batch and simplest distribution that still fails).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Callable, Sequence

import numpy as np
from hypothesis import strategies as st

from hwdeploy.contract.model import TensorSpec

Sampler = Callable[[int, int], Sequence[np.ndarray]]  # (batch, seed) -> one array per input


@dataclass(frozen=True)
class InputCase:
    batch: int
    distribution: str
    seed: int

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class _Stats:
    kind: str  # "f" or "i"
    mean: float = 0.0
    std: float = 1.0
    lo: float = -1.0
    hi: float = 1.0
    tail: tuple[int, ...] | None = None  # non-batch dims seen in the sample
    #: Values outside [lo, hi] are invalid input, not a harder test: a configured range, or a sample that is
    #: never negative (a detector's scale_factor: a negative scale turns boxes inside out before NMS).
    bounded: bool = False


class InputMaker:
    """Turns :class:`InputCase` into model inputs that are realistic and never all-zero.

    Distributions for float inputs: ``sample`` (the zoo's own realistic
    sample), ``normal`` and ``uniform`` matched to the sample's mean/std/range
    (standard normal / [-1, 1] without a sample). Integer inputs (token ids)
    are drawn within the observed or configured id range, uniformly or
    Zipf-like (frequent small ids, like real text).
    """

    def __init__(self, specs: Sequence[TensorSpec], batch_range: tuple[int, int], sampler: Sampler | None = None,
                 input_settings: dict[str, dict[str, Any]] | None = None, dims: int = 8,
                 sample_only: bool = False):
        self.specs = list(specs)
        #: Only the sampler's own inputs (real data): a quantized model is judged on what it was calibrated for.
        self.sample_only = sample_only and sampler is not None
        self.batch_range = (int(batch_range[0]), int(batch_range[1]))
        self.sampler = sampler
        self.settings = input_settings or {}
        self.dims = dims
        self.stats = self._stats()

    @property
    def distributions(self) -> list[str]:
        if self.sample_only:
            return ["sample"]
        return (["sample"] if self.sampler else []) + ["normal", "uniform"]

    def strategy(self) -> st.SearchStrategy[InputCase]:
        lo, hi = self.batch_range
        return st.builds(InputCase, st.integers(lo, hi), st.sampled_from(self.distributions),
                         st.integers(0, 2**31 - 1))

    def _stats(self) -> list[_Stats]:
        sample = list(self.sampler(self.batch_range[0], 12345)) if self.sampler else None
        out = []
        for i, spec in enumerate(self.specs):
            kind = "i" if np.dtype(spec.dtype or "float32").kind in "iub" else "f"
            stats = _Stats(kind)
            if sample is not None:
                a = np.asarray(sample[i], dtype=np.float64)
                stats = _Stats(kind, float(a.mean()), float(a.std()) or 1.0, float(a.min()), float(a.max()),
                               tuple(a.shape[1:]), bounded=bool(a.size) and float(a.min()) >= 0)
            elif kind == "i":
                stats = _Stats(kind, lo=0, hi=15)
            configured = self.settings.get(spec.name, {}).get("range")
            if configured:
                stats.lo, stats.hi = float(configured[0]), float(configured[1])
                stats.bounded = True
                if kind == "f":
                    stats.mean, stats.std = (stats.lo + stats.hi) / 2, (stats.hi - stats.lo) / 4 or 1.0
            out.append(stats)
        return out

    def shape(self, spec: TensorSpec, batch: int, stats: _Stats | None = None) -> tuple[int, ...]:
        configured = self.settings.get(spec.name, {}).get("shape")
        if not configured and stats is not None and stats.tail is not None:
            return (batch, *stats.tail)
        shape = list(configured or spec.shape)
        if not shape:
            raise ValueError(f"input {spec.name!r} has no known shape: set [models.NAME.inputs.{spec.name}] shape")
        shape[0] = batch
        return tuple(self.dims if d is None or d < 0 else int(d) for d in shape)

    def make(self, case: InputCase) -> list[np.ndarray]:
        """The arrays for ``case`` (same case, same arrays)."""
        if case.distribution == "sample":
            arrays = [np.array(a) for a in self.sampler(case.batch, case.seed)]
        else:
            rng = np.random.default_rng(case.seed)
            arrays = [self._draw(rng, spec, stats, case) for spec, stats in zip(self.specs, self.stats)]
        return [_never_all_zero(a, s) for a, s in zip(arrays, self.stats)]

    def _draw(self, rng: np.random.Generator, spec: TensorSpec, stats: _Stats, case: InputCase) -> np.ndarray:
        shape = self.shape(spec, case.batch, stats)
        dtype = np.dtype(spec.dtype or "float32")
        if stats.kind == "i":
            lo, hi = int(stats.lo), int(stats.hi)
            if case.distribution == "normal":  # Zipf-like: small ids frequent
                values = lo + np.minimum(rng.zipf(1.3, size=shape) - 1, hi - lo)
            else:
                values = rng.integers(lo, hi + 1, size=shape)
            return values.astype(dtype)
        if case.distribution == "normal":
            values = rng.normal(stats.mean, stats.std, size=shape)
            if stats.bounded:
                values = np.clip(values, stats.lo, stats.hi)
        else:
            values = rng.uniform(stats.lo, stats.hi, size=shape) if stats.hi > stats.lo else rng.uniform(-1, 1, shape)
        return values.astype(dtype)


def _never_all_zero(a: np.ndarray, stats: _Stats) -> np.ndarray:
    if a.size and not np.any(a):
        a = a.copy()
        a.flat[0] = max(1, int(stats.hi)) if stats.kind == "i" else 1.0
    return a


# ------------------------------------------------------------------------- real inputs from a file
#: Real inputs beside a model: ``inputs.npz`` in the model's folder is used when nothing else is named.
INPUTS_FILE_NAME = "inputs.npz"
#: A file bigger than this is refused before it is read (it is loaded whole by every worker).
MAX_INPUTS_FILE_BYTES = 1 << 30


class InputsFileError(ValueError):
    """An inputs file that cannot be used for a model (names the file and what is wrong)."""


def load_inputs_file(path: str, specs: Sequence[TensorSpec]) -> list[np.ndarray]:
    """The arrays of an ``.npz`` of real inputs for a model with inputs ``specs``, checked against them.

    Arrays are named after the model's inputs (or ``arr_0``, ``arr_1``... in input order, as
    ``np.savez(path, *arrays)`` writes them); the first dimension is the sample, the same count in every
    array; static dimensions must match; values must cast to the input's dtype without loss (no NaN/Inf for
    floats, whole numbers in range for integers). Pickled objects are never loaded.
    """
    import os
    import zipfile

    try:
        size = os.path.getsize(path)
    except OSError as exc:
        raise InputsFileError(f"{path}: cannot read the inputs file ({exc.strerror or exc})") from None
    if size > MAX_INPUTS_FILE_BYTES:
        raise InputsFileError(f"{path}: {size / 2**20:.0f} MiB, more than the {MAX_INPUTS_FILE_BYTES >> 20} MiB"
                              " an inputs file may hold")
    try:
        data = np.load(path, allow_pickle=False)
        if not isinstance(data, np.lib.npyio.NpzFile):
            raise InputsFileError(f"{path}: not an .npz archive (np.savez writes one)")
        with data:
            stored = {k: data[k] for k in data.files}
    except InputsFileError:
        raise
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as exc:
        raise InputsFileError(f"{path}: not a readable .npz of arrays ({type(exc).__name__}: {exc})") from None
    names = [s.name for s in specs]
    positional = [f"arr_{i}" for i in range(len(specs))]
    if set(stored) == set(names):
        arrays = [stored[n] for n in names]
    elif set(stored) == set(positional):
        arrays = [stored[n] for n in positional]
    else:
        raise InputsFileError(f"{path}: holds {sorted(stored)}; the model's inputs are {names} (name the arrays"
                              f" after them, or save them in that order: np.savez(path, *arrays))")
    rows = {a.shape[0] if a.ndim else 0 for a in arrays}
    if len(rows) != 1 or 0 in rows:
        raise InputsFileError(f"{path}: every array needs the same number of samples along its first dimension,"
                              f" at least one; got shapes {[list(a.shape) for a in arrays]}")
    out = []
    for spec, a in zip(specs, arrays):
        where = f"{path}: input {spec.name!r}"
        if spec.shape and a.ndim != len(spec.shape):
            raise InputsFileError(f"{where}: {a.ndim} dimensions, the model's input has {len(spec.shape)}"
                                  f" {list(spec.shape)}")
        for axis, (want, got) in enumerate(zip(spec.shape, a.shape)):
            if axis and want is not None and want >= 0 and want != got:
                raise InputsFileError(f"{where}: dimension {axis} is {got}, the model's input has {want}")
        dtype = np.dtype(spec.dtype or "float32")
        if a.dtype.kind not in "biuf":
            raise InputsFileError(f"{where}: dtype {a.dtype} is not numeric")
        if dtype.kind == "f":
            if a.dtype.kind == "f" and not np.all(np.isfinite(a)):
                raise InputsFileError(f"{where}: holds NaN or Inf")
        elif a.dtype.kind == "f" or not np.can_cast(a.dtype, dtype, "same_kind") or (
                a.size and (a.min() < np.iinfo(dtype).min or a.max() > np.iinfo(dtype).max)):
            raise InputsFileError(f"{where}: {a.dtype} values do not fit the model's {dtype} input")
        if spec.value_range is not None and a.size and (a.min() < spec.value_range[0]
                                                         or a.max() >= spec.value_range[1]):
            raise InputsFileError(f"{where}: values {a.min()}..{a.max()} outside the valid ids"
                                  f" [{spec.value_range[0]}, {spec.value_range[1]})")
        out.append(a.astype(dtype, copy=False))
    return out


def file_sampler(arrays: Sequence[np.ndarray]) -> Sampler:
    """``(batch, seed) -> arrays``: ``batch`` samples of the file drawn by ``seed`` (without replacement while
    the file has enough, so a batch never repeats a sample it need not repeat)."""
    count = arrays[0].shape[0]

    def sample(batch: int, seed: int) -> list[np.ndarray]:
        rng = np.random.default_rng(seed)
        rows = rng.choice(count, batch, replace=batch > count)
        return [a[rows] for a in arrays]

    return sample
