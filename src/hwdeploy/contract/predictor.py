"""The :class:`Predictor` every plugin returns, and the input checks all of them share."""

from __future__ import annotations

import abc
import logging
import math
import threading
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from hwdeploy.contract.records import Device
from hwdeploy.errors import ConcurrentUseError, InputError
from hwdeploy.contract.model import Model, TensorSpec
from hwdeploy.contract.receipt import Receipt

log = logging.getLogger("hwdeploy")


class _PerInstance:
    """A per-instance attribute made on first read (thread-safe: ``dict.setdefault`` is atomic).

    A non-data descriptor: once made, the value sits in the instance's ``__dict__`` and later reads are plain
    attribute reads. Plugins' predictors need no ``__init__`` call for it.
    """

    def __init__(self, make):
        self.make = make

    def __set_name__(self, owner, name):
        self.name = name

    def __get__(self, instance, owner=None):
        if instance is None:
            return self
        return instance.__dict__.setdefault(self.name, self.make(instance))


class Predictor(abc.ABC):
    """A model loaded on one device, ready to run.

    Plugins subclass this and implement :meth:`_run`, :meth:`_receipt` and
    :meth:`_clone` (and :meth:`close` if they hold a process or a session).
    Callers use :meth:`run`, which checks the inputs first, so a plugin's
    ``_run`` only ever sees arrays of the right count, dtype, rank and shape.

    One predictor is for one thread at a time; use :meth:`clone` to get one per
    thread (they share weights where the runtime allows, as Paddle's clone does).
    """

    #: Set by the plugin: the device the runtime really uses.
    device: Device
    model: Model
    inputs: list[TensorSpec]
    outputs: list[TensorSpec]
    #: Reject NaN/Inf inputs (cheap: one reduction per input).
    check_finite: bool = True

    @property
    def input_names(self) -> list[str]:
        return [spec.name for spec in self.inputs]

    @property
    def output_names(self) -> list[str]:
        return [spec.name for spec in self.outputs]

    #: Set True in a plugin whose ``_run`` may be entered from several threads at once because the runtime
    #: serialises or isolates the calls itself (a browser page behind a lock); otherwise :meth:`run` refuses
    #: a second concurrent caller with :class:`ConcurrentUseError` rather than risk mixed-up outputs.
    thread_safe: bool = False
    #: Largest input (bytes) :meth:`run` accepts; None: a quarter of the memory available when first checked.
    #: Set it on a predictor (``p.max_input_bytes = 8 << 30``) to accept larger inputs.
    max_input_bytes: int | None = None

    def run(self, *args: Any, **kwargs: Any) -> list[np.ndarray]:
        """Run on numpy arrays given positionally, as one dict, or as keywords.

        Returns the outputs as numpy arrays, in :attr:`output_names` order. Raises
        :class:`ConcurrentUseError` if another thread is running this predictor right now (Paddle's runtimes
        would hand each caller the other's outputs): give each thread its own :meth:`clone`.
        """
        if self.thread_safe:
            return self._run(self.prepare_inputs(args, kwargs))
        lock = self._run_lock
        if not lock.acquire(False):
            raise ConcurrentUseError(f"{self!r} is already running in another thread; one predictor serves one"
                                     " thread at a time: call predictor.clone() once per thread")
        try:
            # The usual call (matching ndarrays, positionally) is checked here, inline: in a 0.1 ms model every
            # Python call after the runtime's own costs microseconds (its caches are cold), so this stays flat.
            if not kwargs and self._input_plan(args, self):
                return self._run(list(args))
            return self._run(self._checked_inputs(args, kwargs))
        finally:
            lock.release()

    #: Created on first use and kept in the instance (a plain attribute from then on).
    _run_lock = _PerInstance(lambda predictor: threading.Lock())
    _input_plan = _PerInstance(lambda predictor: _plan_inputs(predictor.inputs))

    def __call__(self, *args: Any, **kwargs: Any) -> list[np.ndarray]:
        return self.run(*args, **kwargs)

    def prepare_inputs(self, args: Sequence[Any], kwargs: Mapping[str, Any]) -> list[np.ndarray]:
        """The inputs :meth:`run` would pass to ``_run``, or :class:`InputError` saying what is wrong."""
        if not kwargs and self._input_plan(args, self):
            return list(args)
        return self._checked_inputs(args, kwargs)

    def _checked_inputs(self, args: Sequence[Any], kwargs: Mapping[str, Any]) -> list[np.ndarray]:
        specs = self.inputs
        if self._input_plan.specs is not specs:  # the plugin replaced its specs: plan the fast path again
            self.__dict__.pop("_input_plan", None)
        if len(args) == 1 and isinstance(args[0], Mapping) and not kwargs:
            kwargs, args = args[0], ()
        if args and kwargs:
            raise InputError("pass inputs either positionally or by name, not both")
        if kwargs:
            unknown = set(kwargs) - {s.name for s in specs}
            missing = [s.name for s in specs if s.name not in kwargs]
            if unknown or missing:
                raise InputError(f"inputs must be exactly {self.input_names}; "
                                 + (f"unknown: {sorted(unknown)} " if unknown else "")
                                 + (f"missing: {missing}" if missing else ""))
            arrays = [kwargs[s.name] for s in specs]
        else:
            if len(args) != len(specs):
                raise InputError(f"model takes {len(specs)} input(s) {self.input_names}, got {len(args)}")
            arrays = list(args)
        budget = self._input_budget()
        return [check_input(spec, array, self.check_finite, budget) for spec, array in zip(specs, arrays)]

    def _input_budget(self) -> int:
        return self.max_input_bytes if self.max_input_bytes is not None else default_input_budget()

    @abc.abstractmethod
    def _run(self, inputs: list[np.ndarray]) -> list[np.ndarray]:
        """Run on checked inputs (one C-contiguous array per input spec, in order)."""

    @abc.abstractmethod
    def _receipt(self) -> Receipt:
        """Evidence of where this predictor runs, read from the runtime itself.

        Fill ``requested`` (the device you were given), ``actual`` (the device
        the runtime reports it uses), ``backend``, ``runtime_versions`` and,
        where the runtime can tell, ``ops`` / ``fallback_evidence``. hwdeploy
        adds the plugin, versions, model and policy fields.
        """

    @abc.abstractmethod
    def _clone(self) -> "Predictor":
        """A predictor for another thread, sharing what the runtime lets it share."""

    def add_receipt_fields(self, **fields: Any) -> None:
        """Facts the caller adds to every later :meth:`receipt` (hwdeploy sets plugin, versions, requested device...).

        Kept per predictor (and copied to clones); a plugin's :meth:`_receipt` never needs to know them.
        """
        self.__dict__.setdefault("_extra_receipt_fields", {}).update(fields)

    def receipt(self) -> Receipt:
        """The execution receipt: requested vs actual device, versions, per-op placement."""
        receipt = self._receipt()
        for key, value in self.__dict__.get("_extra_receipt_fields", {}).items():
            setattr(receipt, key, value)
        return receipt

    def clone(self) -> "Predictor":
        """A predictor for another thread (Paddle's rule: one predictor per thread)."""
        twin = self._clone()
        twin.__dict__["_run_lock"] = threading.Lock()  # a clone is for another thread: never the original's lock
        twin.add_receipt_fields(**self.__dict__.get("_extra_receipt_fields", {}))
        return twin

    def close(self) -> None:
        """Release processes, sessions or device memory. Idempotent."""

    def __enter__(self) -> "Predictor":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.model.name or self.model.program} on {self.device.id}>"


# The fast path of :meth:`Predictor.prepare_inputs`. It is built from closures over precomputed constants rather
# than methods over attributes: measured in place, right after a 0.1 ms Paddle run (when every cache the
# interpreter uses is cold), each attribute read and call costs ~0.5-1 µs, and this path runs on every call.

def _plan_inputs(specs: list[TensorSpec]) -> Callable[[Sequence[Any], "Predictor"], bool]:
    """``accepts(args, predictor)``: True when every argument is what :func:`check_input` returns unchanged."""
    checks = [_fast_check(spec) for spec in specs]
    count = len(checks)
    only = checks[0] if count == 1 else None
    default_budget = default_input_budget()

    def accepts(args: Sequence[Any], predictor: "Predictor") -> bool:
        if len(args) != count or predictor.inputs is not specs:  # (the plugin replaced its specs: full path)
            return False
        budget = predictor.max_input_bytes
        if budget is None:
            budget = default_budget
        if count == 1:  # most models: no loop
            return only(args[0], predictor.check_finite, budget)
        check_finite = predictor.check_finite
        for check, array in zip(checks, args):
            if not check(array, check_finite, budget):
                return False
        return True

    accepts.specs = specs  # type: ignore[attr-defined]
    return accepts


def _fast_check(spec: TensorSpec) -> Callable[[Any, bool, int], bool]:
    """:func:`check_input` for one spec, precomputed, for arrays that need no conversion.

    The returned ``accepts(array, check_finite, budget)`` is True only when ``check_input``
    would return the array itself unchanged; any doubt answers False and the full check runs.
    """
    try:
        dtype = np.dtype(spec.dtype) if spec.dtype else None
    except TypeError:
        dtype = None
    if dtype is None:
        return lambda array, check_finite, budget: False
    shape = tuple(spec.shape)
    rank = len(shape) if shape else None
    lead = 0
    while lead < len(shape) and shape[lead] < 0:  # leading dynamic axes (the batch, a sequence length)
        lead += 1
    tail = shape[lead:]
    # Dynamic axes after a static one: compare the static axes one by one.
    static = None if all(d >= 0 for d in tail) else [(i, d) for i, d in enumerate(shape) if d >= 0]
    # float32/float64: finite if the sum of squares is, one BLAS dot product (the cheapest pass there is; a sum
    # that overflows answers False and the exact full check decides). Other floats: _all_finite.
    by_dot = dtype in (np.float32, np.float64)
    finite = None if dtype.kind not in "fc" or by_dot else _all_finite
    value_range = spec.value_range
    ndarray, vdot, isfinite = np.ndarray, _VDOT, math.isfinite

    def accepts(array: Any, check_finite: bool, budget: int) -> bool:
        if type(array) is not ndarray or array.dtype is not dtype:
            return False
        if rank is not None:
            if array.ndim != rank:
                return False
            if static is None:
                if array.shape[lead:] != tail:
                    return False
            elif any(array.shape[i] != d for i, d in static):
                return False
        if not array.size or not array.flags.c_contiguous or array.nbytes > budget:
            return False
        if value_range is not None and not _in_range(array, value_range):
            return False
        if by_dot:
            return not check_finite or isfinite(vdot(array, array))
        return finite is None or not check_finite or finite(array)

    return accepts


def check_input(spec: TensorSpec, array: Any, check_finite: bool = True, budget: int | None = None) -> np.ndarray:
    """Return ``array`` as a C-contiguous ndarray matching ``spec`` or raise :class:`InputError`.

    ``budget``: the most bytes the array may take once contiguous (checked before anything is copied).
    """
    if not isinstance(array, np.ndarray):
        try:
            array = np.asarray(array)
        except Exception as exc:  # ragged lists and such
            raise InputError(f"input {spec.name!r}: cannot convert to an array ({exc})") from None
    if spec.dtype and array.dtype != spec.dtype:
        # Only safe, exact casts are done silently (e.g. a Python int list to int64).
        if array.dtype.kind in "iub" and np.dtype(spec.dtype).kind in "iu" and np.can_cast(array.dtype, spec.dtype):
            array = array.astype(spec.dtype)
        else:
            raise InputError(f"input {spec.name!r}: dtype {array.dtype} does not match the model's {spec.dtype}")
    if spec.shape:
        if array.ndim != len(spec.shape):
            raise InputError(f"input {spec.name!r}: rank {array.ndim} (shape {list(array.shape)}) does not match the"
                             f" model's rank {len(spec.shape)} (shape {list(spec.shape)})")
        for axis, (got, want) in enumerate(zip(array.shape, spec.shape)):
            if want >= 0 and got != want:
                raise InputError(f"input {spec.name!r}: shape {list(array.shape)} does not match the model's"
                                 f" {list(spec.shape)} (axis {axis}: {got} != {want})")
    if array.size == 0:
        raise InputError(f"input {spec.name!r}: empty array (shape {list(array.shape)})")
    budget = default_input_budget() if budget is None else budget
    if array.nbytes > budget:  # nbytes is the contiguous size, even for a zero-copy broadcast view
        raise InputError(f"input {spec.name!r}: {array.nbytes / 2**30:.2f} GiB (shape {list(array.shape)}) exceeds"
                         f" the input budget of {budget / 2**30:.2f} GiB (a quarter of the memory available);"
                         " set predictor.max_input_bytes to accept more")
    distinct = _distinct_elements(array)  # a broadcast view is checked on its distinct elements, never expanded
    if spec.value_range is not None and array.dtype.kind in "iu" and not _in_range(distinct, spec.value_range):
        low, high = spec.value_range
        bad = int(np.count_nonzero((distinct < low) | (distinct >= high)))
        raise InputError(f"input {spec.name!r}: {bad} value(s) outside [{low}, {high}) (min {int(distinct.min())},"
                         f" max {int(distinct.max())}): it indexes a table of {high} rows")
    if check_finite and array.dtype.kind in "fc" and not _all_finite(distinct):
        array = distinct
        bad = ~np.isfinite(array)
        raise InputError(f"input {spec.name!r}: {int(bad.sum())} NaN/Inf value(s), first at index"
                         f" {tuple(int(i) for i in np.unravel_index(int(np.argmax(bad)), array.shape))}")
    if not array.flags.c_contiguous:
        array = np.ascontiguousarray(array)
    return array


def _all_finite(array: np.ndarray) -> bool:
    # Never warns (a sum overflows on huge finite values) and costs about one pass: as cheap as a sum on
    # large inputs, 3x cheaper than isfinite().all() on small ones (count_nonzero skips ufunc machinery).
    return np.count_nonzero(np.isfinite(array)) == array.size


# np.vdot's C implementation, without the __array_function__ dispatch (only plain ndarrays reach it).
_VDOT = getattr(np.vdot, "_implementation", np.vdot)


def _in_range(array: np.ndarray, value_range: tuple[int, int]) -> bool:
    return array.dtype.kind not in "iu" or (int(array.min()) >= value_range[0] and int(array.max()) < value_range[1])


def _distinct_elements(array: np.ndarray) -> np.ndarray:
    """``array`` without its zero-stride (broadcast) axes: the same values, stored once."""
    if 0 not in array.strides:
        return array
    return array[tuple(slice(0, 1) if stride == 0 else slice(None) for stride in array.strides)]


_budget: list[int] = []


def default_input_budget() -> int:
    """A quarter of the memory available (``MemAvailable``) when first asked, else of physical memory."""
    if not _budget:
        available = None
        try:
            with open("/proc/meminfo") as fh:
                for line in fh:
                    if line.startswith("MemAvailable:"):
                        available = int(line.split()[1]) * 1024
                        break
        except (OSError, ValueError):
            pass
        if available is None:
            from hwdeploy.sdk.hostinfo import memory_bytes

            available = memory_bytes() or 8 << 30
        _budget.append(max(available // 4, 64 << 20))
    return _budget[0]
