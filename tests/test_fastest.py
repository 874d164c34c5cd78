"""``device="auto:fastest"``: measured choice, parity gate, cached decision, receipt.

Fixture backends come from a real plugin installed through an entry point
(``hwdeploy.sdk.testing.install_plugin``): one that is fast but wrong, one that is
right only on its first call, one that crashes, and a correct "mirror" of the
reference. No test asserts a timing: only what was chosen *given* parity.
"""

import json
import math

import numpy as np
import pytest

import hwdeploy
from hwdeploy import fastest
from hwdeploy.contract.records import Device
from hwdeploy.errors import DeviceNotFoundError, InputError, OptionError
from hwdeploy.sdk.testing import install_plugin, plugins_on_path

FIXTURE_BACKENDS = """
import numpy as np
from hwdeploy import Device, Predictor, Receipt, hookimpl
from hwdeploy.sdk import paddle_inference as pi
from hwdeploy.contract.model import model_io

CREATED = []


class WrongFast(Predictor):
    # Returns zeros without computing anything: faster than any real backend, and wrong.
    def __init__(self, model, device):
        self.model, self.device = model, device
        self.inputs, self.outputs = model_io(model)

    def _run(self, inputs):
        batch = inputs[0].shape[0]
        return [np.zeros((batch,) + tuple(o.shape[1:]), o.dtype) for o in self.outputs]

    def _receipt(self):
        return Receipt(requested=self.device.id, actual=self.device.id, backend=self.device.backend)

    def _clone(self):
        return self


class Mirror(Predictor):
    # A real Paddle Inference predictor under another backend name; optionally wrong after N calls.
    def __init__(self, model, device, wrong_after=None, crash=False):
        self._inner = pi.PaddleInferencePredictor(model, device, pi.make_config(model, threads=1))
        self.model, self.device = model, device
        self.inputs, self.outputs = self._inner.inputs, self._inner.outputs
        self.calls, self.wrong_after, self.crash = 0, wrong_after, crash

    def _run(self, inputs):
        self.calls += 1
        if self.crash:
            raise RuntimeError("device lost")
        out = self._inner._run(inputs)
        if self.wrong_after is not None and self.calls > self.wrong_after:
            out = [o * 1.01 for o in out]
        return out

    def _receipt(self):
        return Receipt(requested=self.device.id, actual=self.device.id, backend=self.device.backend)

    def _clone(self):
        return self


@hookimpl
def hwdeploy_discover_devices():
    return [Device("cpu", 0, name="fixture", backend=b, priority=-5)
            for b in ("wrongfast", "firstonly", "crashy", "mirror")]


@hookimpl
def hwdeploy_create_predictor(model, device, options):
    if device.backend in ("wrongfast", "firstonly", "crashy", "mirror"):
        CREATED.append(device.backend)
    if device.backend == "wrongfast":
        return WrongFast(model, device)
    if device.backend == "firstonly":
        return Mirror(model, device, wrong_after=1)
    if device.backend == "crashy":
        return Mirror(model, device, crash=True)
    if device.backend == "mirror":
        return Mirror(model, device)
    return None
"""

QUICK = {"rounds": 2, "runs": 3, "warmup": 1, "settle": 0}


@pytest.fixture
def fixture_backends(tmp_path, monkeypatch):
    monkeypatch.setenv("HWDEPLOY_CACHE_DIR", str(tmp_path / "cache"))  # fresh decision cache per test
    site = install_plugin(tmp_path / "site", "fixturebackends", FIXTURE_BACKENDS)
    with plugins_on_path(site):
        import hwdeploy_test_fixturebackends as module

        yield module


def candidates(selection):
    return {r["backend"]: r for r in selection["candidates"]}


# ------------------------------------------------------------------ pure functions
def test_parity_passes_within_tolerance_and_fails_beyond():
    ref = [np.linspace(-1, 1, 100, dtype=np.float32).reshape(10, 10)]
    err, why = fastest.parity(ref, [ref[0] * (1 + 5e-5)])
    assert why == "" and 0 < err <= 1e-4
    err, why = fastest.parity(ref, [ref[0] * 1.001])
    assert "relative L2" in why and err > 1e-4


@pytest.mark.parametrize("outputs, match", [
    ([np.full((10, 10), np.nan, np.float32)], "relative L2"),
    ([np.zeros((10, 9), np.float32)], "shape"),
    ([], "0 output"),
])
def test_parity_rejects_nan_wrong_shape_and_missing_outputs(outputs, match):
    ref = [np.ones((10, 10), np.float32)]
    err, why = fastest.parity(ref, outputs)
    assert match in why and math.isinf(err)


def test_parity_requires_exact_integers():
    ref = [np.arange(6, dtype=np.int64)]
    assert fastest.parity(ref, [np.arange(6, dtype=np.int64)]) == (0.0, "")
    _err, why = fastest.parity(ref, [np.arange(6, dtype=np.int64) + (np.arange(6) == 2)])
    assert "1 of 6" in why


def test_choose_never_picks_a_backend_that_failed_parity():
    records = [{"backend": "wrong", "parity": False, "median_ms": 0.01},
               {"backend": "slow", "parity": True, "median_ms": 9.0},
               {"backend": "fast", "parity": True, "median_ms": 3.0},
               {"backend": "broken", "parity": None, "error": "create: boom"}]
    assert fastest.choose(records)["backend"] == "fast"
    assert fastest.choose([records[0], records[3]]) is None


def test_candidates_are_cpu_devices_and_non_negative_priority_devices():
    found = [Device("cpu", 0, backend="paddle-inference", priority=0),
             Device("cpu", 0, backend="onnxruntime", priority=-1),
             Device("gpu", 0, backend="tensorrt", priority=100),
             Device("webgl", 0, backend="paddlejs", priority=-10),
             Device("npu", 0, backend="ascend", priority=90, available=False)]
    chosen = fastest.candidate_devices(found)
    assert [d.backend for d in chosen] == ["paddle-inference", "onnxruntime", "tensorrt"]
    assert [d.backend for d in fastest.candidate_devices(found, ["onnxruntime"])] == ["onnxruntime"]


# ------------------------------------------------------------------ through hwdeploy.predictor
def test_a_fast_but_wrong_backend_is_never_chosen(tiny_mlp, fixture_backends):
    p = hwdeploy.predictor(tiny_mlp, "auto:fastest", backends=["paddle-inference", "wrongfast"], threads=1, **QUICK)
    receipt = p.receipt()
    assert receipt.backend == "paddle-inference"
    found = candidates(receipt.selection)
    assert found["wrongfast"]["parity"] is False
    assert "relative L2" in found["wrongfast"]["error"]
    assert found["paddle-inference"]["parity"] is True and found["paddle-inference"]["median_ms"] > 0
    assert any("wrongfast" in s for s in receipt.auto_skipped)
    x = np.random.default_rng(1).standard_normal((3, 8)).astype("float32")
    expected = hwdeploy.predictor(tiny_mlp, "cpu", threads=1).run(x)[0]
    np.testing.assert_allclose(p.run(x)[0], expected, rtol=1e-6)


def test_a_backend_accurate_only_on_its_first_call_is_caught_in_the_timed_runs(tiny_mlp, fixture_backends):
    p = hwdeploy.predictor(tiny_mlp, "auto:fastest", backends=["paddle-inference", "firstonly"], threads=1, **QUICK)
    found = candidates(p.receipt().selection)
    assert found["firstonly"]["parity"] is False
    assert "timed run" in found["firstonly"]["error"]
    assert p.receipt().backend == "paddle-inference"


def test_a_crashing_backend_is_skipped_with_its_error(tiny_mlp, fixture_backends):
    p = hwdeploy.predictor(tiny_mlp, "auto:fastest", backends=["paddle-inference", "crashy"], threads=1, **QUICK)
    found = candidates(p.receipt().selection)
    assert "device lost" in found["crashy"]["error"]
    assert p.receipt().backend == "paddle-inference"


def test_a_correct_alternative_can_win_and_the_choice_is_the_fastest_measured(tiny_mlp, fixture_backends):
    p = hwdeploy.predictor(tiny_mlp, "auto:fastest", backends=["paddle-inference", "mirror", "wrongfast"],
                           threads=1, **QUICK)
    selection = p.receipt().selection
    found = candidates(selection)
    passing = {b: r["median_ms"] for b, r in found.items() if r["parity"]}
    assert set(passing) == {"paddle-inference", "mirror"}
    assert selection["chosen"]["backend"] == min(passing, key=passing.get)
    assert p.receipt().backend == selection["chosen"]["backend"]


def test_the_decision_is_cached_and_keyed_by_input_shape(tiny_mlp, fixture_backends):
    args = dict(backends=["paddle-inference", "wrongfast"], threads=1, **QUICK)
    first = hwdeploy.predictor(tiny_mlp, "auto:fastest", **args).receipt().selection
    assert first["cached"] is False
    fixture_backends.CREATED.clear()
    second = hwdeploy.predictor(tiny_mlp, "auto:fastest", **args).receipt().selection
    assert second["cached"] is True and second["key"] == first["key"]
    assert fixture_backends.CREATED == []  # nothing re-measured
    assert second["candidates"] == first["candidates"]
    refreshed = hwdeploy.predictor(tiny_mlp, "auto:fastest", refresh=True, **args).receipt().selection
    assert refreshed["cached"] is False and fixture_backends.CREATED == ["wrongfast"]
    batch4 = [np.random.default_rng(0).standard_normal((4, 8)).astype("float32")]
    other = hwdeploy.predictor(tiny_mlp, "auto:fastest", sample_inputs=batch4, **args).receipt().selection
    assert other["key"] != first["key"] and other["cached"] is False
    assert other["inputs"] == [{"shape": [4, 8], "dtype": "float32"}]
    assert fastest.load_decision(first["key"])["chosen"] == first["chosen"]


def test_the_receipt_records_the_measurement_as_json(tiny_mlp, fixture_backends):
    p = hwdeploy.predictor(tiny_mlp, "auto:fastest", backends=["paddle-inference", "wrongfast"], threads=1, **QUICK)
    receipt = p.receipt()
    assert receipt.requested == "auto:fastest" and receipt.actual == "cpu:0" and not receipt.fell_back
    data = json.loads(receipt.to_json())
    sel = data["selection"]
    assert sel["reference"] == "cpu:0/paddle-inference"
    assert sel["rounds"] == 2 and sel["runs"] == 3
    assert {r["backend"] for r in sel["candidates"]} == {"paddle-inference", "wrongfast"}
    ref = next(r for r in sel["candidates"] if r["backend"] == "paddle-inference")
    assert ref["samples"] == 6 and ref["rel_l2"] == 0.0


def test_sample_inputs_by_name_and_wrong_sample_inputs(tiny_mlp, fixture_backends):
    x = np.random.default_rng(3).standard_normal((2, 8)).astype("float32")
    p = hwdeploy.predictor(tiny_mlp, "auto:fastest", backends=["paddle-inference"], sample_inputs={"x": x}, **QUICK)
    assert p.receipt().selection["inputs"] == [{"shape": [2, 8], "dtype": "float32"}]
    with pytest.raises(InputError, match="shape"):
        hwdeploy.predictor(tiny_mlp, "auto:fastest", backends=["paddle-inference"],
                           sample_inputs=[x[:, :5]], **QUICK)


def test_options_one_backend_rejects_disqualify_only_that_backend(tiny_mlp, fixture_backends):
    # "hint" means nothing to Paddle Inference: it still serves as the parity oracle, but is no candidate.
    p = hwdeploy.predictor(tiny_mlp, "auto:fastest", backends=["paddle-inference", "mirror"], hint="latency",
                           **QUICK)
    found = candidates(p.receipt().selection)
    assert "unknown option" in found["paddle-inference"]["error"]
    assert p.receipt().backend == "mirror" and found["mirror"]["parity"] is True


def test_no_candidate_and_bad_measurement_options(tiny_mlp, fixture_backends):
    with pytest.raises(DeviceNotFoundError, match="no candidate"):
        hwdeploy.predictor(tiny_mlp, "auto:fastest", backends=["no-such-backend"])
    with pytest.raises(OptionError, match="runs"):
        hwdeploy.predictor(tiny_mlp, "auto:fastest", runs=0)
    with pytest.raises(OptionError, match="settle"):
        hwdeploy.predictor(tiny_mlp, "auto:fastest", settle=-1)
    with pytest.raises(DeviceNotFoundError, match="passed parity"):
        hwdeploy.predictor(tiny_mlp, "auto:fastest", backends=["wrongfast"], **QUICK)
