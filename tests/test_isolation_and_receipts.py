"""Crash/hang isolation for probes, and the receipt's fallback logic."""

import json
import os
import textwrap

import pytest
from hypothesis import given
from hypothesis import strategies as st

from hwdeploy import OpPlacement, Receipt
from hwdeploy.sdk.isolation import run_probe

TARGETS = textwrap.dedent("""
    import os, signal, time

    def ok(a, b):
        return {"sum": a + b, "pid": os.getpid()}

    def abort():
        os.abort()

    def segfault():
        import ctypes
        ctypes.string_at(0)

    def hang():
        time.sleep(600)

    def raises():
        raise RuntimeError("driver said no")

    def counter(path):
        with open(path, "a") as fh:
            fh.write("x")
        return 1
""")


@pytest.fixture()
def targets(tmp_path, monkeypatch):
    (tmp_path / "probe_targets_mod.py").write_text(TARGETS)
    monkeypatch.setenv("PYTHONPATH", str(tmp_path))
    monkeypatch.setenv("HWDEPLOY_CACHE_DIR", str(tmp_path / "cache"))
    return tmp_path


def test_probe_returns_value_from_another_process(targets):
    result = run_probe("probe_targets_mod:ok", [2, 3], timeout=30)
    assert result.ok and result.value["sum"] == 5 and result.value["pid"] != os.getpid()


@pytest.mark.parametrize("target, expected", [("abort", "SIGABRT"), ("segfault", "SIGSEGV"),
                                              ("raises", "driver said no")])
def test_crashes_become_results(targets, target, expected):
    result = run_probe(f"probe_targets_mod:{target}", timeout=30)
    assert not result.ok and expected in result.error


def test_hang_is_killed_at_the_timeout(targets):
    result = run_probe("probe_targets_mod:hang", timeout=1.5)
    assert not result.ok and result.timed_out and "timed out" in result.error


def test_cache_serves_repeated_probes(targets):
    path = targets / "count.txt"
    for _ in range(3):
        assert run_probe("probe_targets_mod:counter", [str(path)], cache_ttl=60).ok
    assert path.read_text() == "x"
    run_probe("probe_targets_mod:counter", [str(path)], cache_ttl=0)
    assert path.read_text() == "xx"


def receipt(**kw):
    base = dict(requested="npu:0", selected="npu:0", actual="npu:0", backend="paddle-inference")
    base.update(kw)
    return Receipt(**base)


def test_clean_receipt_has_no_fallback():
    r = receipt(ops=[OpPlacement("matmul", "npu:0", 2), OpPlacement("relu", "npu:0")], ops_known=True)
    assert r.fallback_reasons() == [] and not r.fell_back


def test_wrong_device_and_off_device_ops_are_named():
    r = receipt(actual="cpu:0")
    assert r.fallback_reasons() == ["requested npu:0 but the paddle-inference runtime runs on cpu:0"]
    r = receipt(ops=[OpPlacement("softmax", "cpu", 1, "no kernel on the device"), OpPlacement("matmul", "npu:0")])
    (reason,) = r.fallback_reasons()
    assert "softmax (no kernel on the device)" in reason and "matmul" not in reason


def test_plugin_evidence_counts_as_fallback():
    r = receipt(requested="webgl", selected="webgl:0", actual="webgl:0",
                fallback_evidence=["renderer is SwiftShader (software, runs on the CPU)"])
    assert r.fell_back and "SwiftShader" in r.fallback_reasons()[0]


names = st.from_regex(r"[a-z_]{1,12}", fullmatch=True)
devices = st.sampled_from(["npu:0", "cpu:0", "cpu", "gpu:1"])


@given(ops=st.lists(st.builds(OpPlacement, names, devices, st.integers(1, 5), st.sampled_from(["", "why"]))),
       actual=st.sampled_from(["npu:0", "cpu:0"]))
def test_receipts_round_trip_and_fallback_is_exactly_the_off_device_ops(ops, actual):
    r = receipt(actual=actual, ops=ops)
    data = json.loads(r.to_json())
    again = Receipt.from_dict(data)
    assert again == r
    off = [op for op in ops if op.device != actual]
    assert (len(r.fallback_reasons()) > 0) == (actual != "npu:0" or bool(off))
    if off:
        assert f"{sum(op.count for op in off)} op(s) ran off {actual}" in " ".join(r.fallback_reasons())
