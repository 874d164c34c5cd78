"""The per-call fast path of ``Predictor.prepare_inputs`` accepts exactly what ``check_input`` passes unchanged.

The fast path exists for zero wrapper overhead; these properties pin it to
the full check, so validation behaviour cannot drift between the two.
"""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hwdeploy.errors import InputError
from hwdeploy.contract.model import TensorSpec
from hwdeploy.contract.predictor import Predictor, _fast_check, check_input


class Echo(Predictor):
    def __init__(self, specs, check_finite=True):
        self.inputs, self.outputs, self.check_finite = specs, [], check_finite

    def _run(self, inputs):
        return inputs

    def _receipt(self):  # pragma: no cover - not used
        raise NotImplementedError

    def _clone(self):  # pragma: no cover - not used
        return self


DTYPES = ["float32", "float64", "int64", "int32", "float16", "bool", "uint8"]
dims = st.lists(st.sampled_from([-1, 0, 1, 2, 3]), min_size=0, max_size=4)


@st.composite
def spec_and_array(draw):
    shape = tuple(draw(dims))
    spec = TensorSpec("x", shape, draw(st.sampled_from(DTYPES + [""])))
    concrete = tuple(draw(st.sampled_from([1, 2, 3])) if d < 0 else d for d in shape)
    if draw(st.booleans()):  # perturb the shape or rank
        concrete = tuple(draw(st.lists(st.sampled_from([0, 1, 2, 3]), min_size=0, max_size=4)))
    dtype = draw(st.sampled_from(DTYPES))
    array = np.arange(int(np.prod(concrete)) if concrete else 1).reshape(concrete).astype(dtype)
    special = draw(st.sampled_from(["none", "nan", "inf", "huge", "transposed", "list", "subclass"]))
    if special in ("nan", "inf") and array.dtype.kind == "f" and array.size:
        array.flat[draw(st.integers(0, array.size - 1))] = np.nan if special == "nan" else -np.inf
    elif special == "huge" and array.dtype.kind == "f" and array.size:
        array[...] = np.finfo(array.dtype).max
    elif special == "transposed" and array.ndim >= 2:
        array = array.T
    elif special == "list":
        array = array.tolist()
    elif special == "subclass":
        array = array.view(np.matrix) if array.ndim == 2 else array
    return spec, array


def outcome(fn):
    try:
        return "ok", fn()
    except InputError as exc:
        return "error", str(exc)


@settings(max_examples=400, deadline=None)
@given(spec_and_array(), st.booleans())
def test_fast_path_accepts_only_what_the_full_check_returns_unchanged(case, check_finite):
    spec, array = case
    budget = 1 << 30
    if _fast_check(spec)(array, check_finite, budget):
        assert check_input(spec, array, check_finite, budget) is array


@settings(max_examples=400, deadline=None)
@given(spec_and_array(), st.booleans())
def test_prepare_inputs_behaves_like_check_input(case, check_finite):
    spec, array = case
    kind, expected = outcome(lambda: check_input(spec, array, check_finite))
    got_kind, got = outcome(lambda: Echo([spec], check_finite).prepare_inputs((array,), {}))
    assert got_kind == kind
    if kind == "error":
        assert got == expected
    else:
        assert len(got) == 1 and got[0].dtype == expected.dtype and np.array_equal(got[0], expected, equal_nan=True)
        assert got[0].flags.c_contiguous


def test_fast_path_returns_the_callers_arrays_without_copies():
    specs = [TensorSpec("a", (-1, 4), "float32"), TensorSpec("b", (-1,), "int64")]
    a, b = np.zeros((2, 4), np.float32), np.arange(2)
    out = Echo(specs).prepare_inputs((a, b), {})
    assert out[0] is a and out[1] is b


def test_a_dict_argument_still_means_inputs_by_name():
    spec = TensorSpec("x", (-1, 2), "float32")
    x = np.ones((1, 2), np.float32)
    assert Echo([spec]).prepare_inputs(({"x": x},), {})[0] is x
    with pytest.raises(InputError, match="missing"):
        Echo([spec]).prepare_inputs(({"y": x},), {})


def test_a_budget_set_after_the_first_run_applies_to_the_next_one():
    spec = TensorSpec("x", (-1, 4), "float32")
    x = np.ones((8, 4), np.float32)
    p = Echo([spec])
    assert p.run(x)[0] is x  # the fast path is planned here, with the default budget
    p.max_input_bytes = x.nbytes - 1
    with pytest.raises(InputError, match="exceeds the input budget"):
        p.run(x)
    p.max_input_bytes = None
    assert p.run(x)[0] is x


def test_specs_replaced_after_the_first_run_are_the_ones_checked():
    p = Echo([TensorSpec("x", (-1, 4), "float32")])
    x = np.ones((2, 4), np.float32)
    assert p.run(x)[0] is x
    p.inputs = [TensorSpec("x", (-1, 5), "float32")]
    with pytest.raises(InputError, match="axis 1: 4 != 5"):
        p.run(x)
    y = np.ones((2, 5), np.float32)
    assert p.run(y)[0] is y and p._input_plan.specs is p.inputs  # planned again for the new specs


def test_a_sum_of_squares_that_overflows_is_still_accepted_by_the_exact_check():
    x = np.full((1, 4), 3e38, np.float32)  # finite, but its sum of squares is not
    assert np.isinf(np.vdot(x, x))
    assert Echo([TensorSpec("x", (-1, 4), "float32")]).run(x)[0] is x
