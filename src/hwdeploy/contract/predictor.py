"""The :class:`Predictor` every plugin returns, and the input checks all of them share."""

from __future__ import annotations

import abc
import logging
from typing import Any, Mapping, Sequence

import numpy as np

from hwdeploy.contract.records import Device
from hwdeploy.errors import InputError
from hwdeploy.contract.model import Model, TensorSpec
from hwdeploy.contract.receipt import Receipt

log = logging.getLogger("hwdeploy")


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

    def run(self, *args: Any, **kwargs: Any) -> list[np.ndarray]:
        """Run on numpy arrays given positionally, as one dict, or as keywords.

        Returns the outputs as numpy arrays, in :attr:`output_names` order.
        """
        return self._run(self.prepare_inputs(args, kwargs))

    def __call__(self, *args: Any, **kwargs: Any) -> list[np.ndarray]:
        return self.run(*args, **kwargs)

    def prepare_inputs(self, args: Sequence[Any], kwargs: Mapping[str, Any]) -> list[np.ndarray]:
        specs = self.inputs
        if not kwargs and len(args) == len(specs):
            # Fast path for the usual call (ndarrays that already match, given positionally): the same
            # checks, precomputed per spec. Anything else takes the full path below, which raises.
            plans = self.__dict__.get("_input_plans")
            if plans is None or plans[0] is not specs:
                plans = self._input_plans = (specs, [_FastCheck(spec) for spec in specs])
            check_finite = self.check_finite
            for plan, array in zip(plans[1], args):
                if not plan.accepts(array, check_finite):
                    break
            else:
                return list(args)
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
        return [check_input(spec, array, self.check_finite) for spec, array in zip(specs, arrays)]

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


class _FastCheck:
    """:func:`check_input` for one spec, precomputed, for arrays that need no conversion.

    ``accepts`` is True only when ``check_input`` would return the array
    itself unchanged; any doubt answers False and the full check runs.
    """

    __slots__ = ("dtype", "rank", "lead", "tail", "static", "floating")

    def __init__(self, spec: TensorSpec):
        try:
            self.dtype = np.dtype(spec.dtype) if spec.dtype else None
        except TypeError:
            self.dtype = None
        shape = tuple(spec.shape)
        self.rank = len(shape) if shape else None
        lead = 0
        while lead < len(shape) and shape[lead] < 0:  # leading dynamic axes (the batch, a sequence length)
            lead += 1
        self.lead, self.tail = lead, shape[lead:]
        # Dynamic axes after a static one: compare the static axes one by one.
        self.static = None if all(d >= 0 for d in self.tail) else [(i, d) for i, d in enumerate(shape) if d >= 0]
        self.floating = self.dtype is not None and self.dtype.kind in "fc"

    def accepts(self, array: Any, check_finite: bool) -> bool:
        if type(array) is not np.ndarray or self.dtype is None or array.dtype is not self.dtype:
            return False
        if self.rank is not None:
            if array.ndim != self.rank:
                return False
            shape = array.shape
            if self.static is None:
                if shape[self.lead:] != self.tail:
                    return False
            elif any(shape[i] != d for i, d in self.static):
                return False
        if not array.size or not array.flags.c_contiguous:
            return False
        return not (check_finite and self.floating and not _all_finite(array))


def check_input(spec: TensorSpec, array: Any, check_finite: bool = True) -> np.ndarray:
    """Return ``array`` as a C-contiguous ndarray matching ``spec`` or raise :class:`InputError`."""
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
    if check_finite and array.dtype.kind in "fc" and not _all_finite(array):
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
