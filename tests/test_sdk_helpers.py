"""SDK helpers shared by plugins, tests and the conformance suite: one metric, one host fingerprint."""

import json
import platform

import numpy as np
import pytest

from hwdeploy.sdk.hostinfo import cpu_name, default_threads, machine_fingerprint, memory_bytes
from hwdeploy.sdk.testing import rel_l2


def test_rel_l2_is_relative_to_the_reference_and_in_float64():
    ref = np.array([3.0, 4.0], np.float32)  # norm 5
    assert rel_l2(ref + np.float32(0.5), ref) == pytest.approx(np.sqrt(0.5) / 5)
    assert rel_l2(ref * 2, ref) == pytest.approx(1.0) and rel_l2(ref, ref * 2) == pytest.approx(0.5)  # not symmetric
    assert rel_l2(ref.reshape(2, 1), ref) == pytest.approx(0.0)  # over all elements, shapes aside
    tiny = np.full(4, 1e-30, np.float32)
    assert rel_l2(tiny * 1.001, tiny) == pytest.approx(1e-3, rel=1e-3)  # float64: no underflow at any scale


def test_rel_l2_of_a_zero_reference_is_zero_or_infinite_never_nan():
    zero = np.zeros(3)
    assert rel_l2(zero, zero) == 0.0
    assert rel_l2(zero + 1e-9, zero) == float("inf")


def test_the_conformance_suite_judges_with_the_same_metric():
    metrics = pytest.importorskip("hwdeploy_conformance.metrics")
    assert metrics.rel_l2 is rel_l2


def test_machine_fingerprint_names_the_host_and_is_stable():
    fp = machine_fingerprint()
    assert set(fp) == {"cpu", "cores", "memory_bytes", "machine", "node", "system", "release", "python"}
    assert (fp["cpu"], fp["cores"], fp["memory_bytes"]) == (cpu_name(), default_threads(), memory_bytes())
    assert fp["cores"] >= 1 and fp["machine"] == platform.machine() and fp["python"] == platform.python_version()
    assert json.loads(json.dumps(fp)) == fp and machine_fingerprint() == fp  # a cache key can hold it


@pytest.mark.parametrize("machine, flags, saturates", [
    ("x86_64", {"avx2", "fma"}, True),                    # AVX2 only: vpmaddubsw adds pairs in int16
    ("x86_64", {"avx2", "avx512f", "avx512_vnni"}, False),
    ("x86_64", {"avx2", "avx_vnni"}, False),
    ("x86_64", {"avx512f", "amx_int8"}, False),
    ("x86_64", set(), True),                             # flags unknown: assume the worst
    ("aarch64", {"asimd", "asimddp"}, False),            # not an x86 int16 pair-add
])
def test_int8_saturation_follows_the_cpu_flags(monkeypatch, machine, flags, saturates):
    from hwdeploy.sdk import hostinfo

    monkeypatch.setattr(hostinfo.platform, "machine", lambda: machine)
    monkeypatch.setattr(hostinfo, "cpu_flags", lambda: frozenset(flags))
    assert hostinfo.int8_saturates() is saturates


def test_cpu_flags_are_this_hosts():
    from hwdeploy.sdk import hostinfo

    flags = hostinfo.cpu_flags()
    if platform.machine() == "x86_64":
        assert {"sse2", "fpu"} <= flags  # every x86_64 CPU has them
