"""The Ascend plugin on a simulated Paddle CustomDevice built as its device type (simdevice/ in the repository).

The simulated device is real C++ loaded by Paddle: Paddle Inference runs
matmul/add/relu/conv2d (float32) on it and silently falls back to the CPU for
every other op, exactly like a vendor plugin with gaps. The device logs each
kernel it executes (``SIMDEV_TRACE``): that trace, and Paddle's registered
kernel inventory, are the independent ground truth the receipts are checked
against. Every test that needs the device runs Paddle in a child process with
``CUSTOM_DEVICE_ROOT`` set, because Paddle loads plugins only when imported.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[3] / "simdevice"))
import simdevice_testkit as kit  # noqa: E402

from hwdeploy import zoo  # noqa: E402
from hwdeploy.receipt import CARRIED_PLACEMENT, FORCED_OFF, NO_KERNEL  # noqa: E402

KIND = "npu"
DEVICE = "npu:0"
PLUGIN = "ascend"
VISIBLE_ENV = "ASCEND_RT_VISIBLE_DEVICES"
OTHER_KIND = "mlu"  # the other CustomDevice kind, absent here
ZOO = zoo.names()  # every zoo model

pytestmark = pytest.mark.slow


@pytest.fixture(autouse=True)
def forget_discovery():
    """Tests here change the environment discovery depends on: never leave their devices cached."""
    yield
    from hwdeploy.api import clear_discovery_cache

    clear_discovery_cache()


@pytest.fixture(scope="module")
def root() -> Path:
    return kit.sim_root(KIND)


@pytest.fixture(scope="module")
def models(root) -> Path:
    return kit.tiny_models()


@pytest.fixture(scope="module")
def env(root, tmp_path_factory) -> dict:
    trace = tmp_path_factory.mktemp("trace") / "trace.txt"
    return {"CUSTOM_DEVICE_ROOT": str(root), kit.build.TRACE_ENV: str(trace), "CUSTOM_DEVICE_BLACK_LIST": None,
            VISIBLE_ENV: None}


@pytest.fixture(scope="module")
def runs(env, models) -> dict:
    """One child: the supported-only zoo MLP fail-closed, the softmax MLP under each policy, the convnet."""
    mlp, conv = str(models / "mlp_softmax"), str(models / "convnet")
    plan = [["zoo:mlp", "error"], [mlp, "error"], [mlp, "warn"], [mlp, "allow"], [conv, "allow"]]
    report = kit.child_value(kit.in_child("scenario_run", plan, DEVICE, 2, 1, KIND, env=env))
    return {"report": report, "mlp": mlp, "conv": conv}


def test_ascend_simulated_device_registers_exactly_its_kernels(runs):
    inventory = runs["report"]["_inventory"]
    assert inventory["count"] == 1
    # Paddle's own inventory agrees with what kernels.cc registers: those four, float32 only.
    assert inventory["own"] == {name: ["float32"] for name in sorted(kit.KERNELS)}
    assert "softmax" not in inventory["own"] and "softmax" not in inventory["generic"]


def test_ascend_discovery_lists_the_simulated_device(root, monkeypatch):
    import hwdeploy

    monkeypatch.setenv("CUSTOM_DEVICE_ROOT", str(root))
    monkeypatch.delenv(VISIBLE_ENV, raising=False)
    found = hwdeploy.devices(refresh=True)
    ours = [d for d in found if d.kind == KIND]
    assert [(d.id, d.available, d.plugin, d.backend) for d in ours] == [(DEVICE, True, PLUGIN, "paddle-inference")]
    assert ours[0].priority == 90
    # Available devices come first, best first: "auto" ranks the accelerator above the CPU.
    available = [d for d in found if d.available]
    assert available[0].id == DEVICE and [d for d in available if d.kind == "cpu"][0].priority < ours[0].priority
    assert any(str(root) in lib for lib in ours[0].details["plugin_libraries"])
    # The other vendor's kind is reported absent, naming what Paddle did register.
    other = [d for d in found if d.kind == OTHER_KIND]
    assert other and not other[0].available and f"registered types: {KIND}" in other[0].reason


def test_ascend_visible_devices_variable_is_honoured(root, monkeypatch):
    import hwdeploy

    monkeypatch.setenv("CUSTOM_DEVICE_ROOT", str(root))
    monkeypatch.setenv(VISIBLE_ENV, "")
    hidden = [d for d in hwdeploy.devices(refresh=True) if d.kind == KIND]
    assert len(hidden) == 1 and not hidden[0].available
    assert f"{VISIBLE_ENV}=''" in hidden[0].reason and "no visible device" in hidden[0].reason

    monkeypatch.setenv(kit.build.COUNT_ENV, "3")
    monkeypatch.setenv(VISIBLE_ENV, "2,0")
    shown = [d for d in hwdeploy.devices(refresh=True) if d.kind == KIND]
    assert [(d.id, d.available, d.details["physical_id"]) for d in shown] == [(DEVICE, True, 2), (f"{KIND}:1", True, 0)]


def test_ascend_supported_only_model_passes_fail_closed(runs):
    entry = runs["report"]["zoo:mlp|error"]
    assert "error" not in entry, entry.get("message")
    assert entry["device"] == DEVICE and entry["warnings"] == []
    receipt = entry["receipt"]
    assert receipt["actual"] == DEVICE and receipt["fallback_reasons"] == []
    assert kit.host_ops(receipt, DEVICE) == {}
    # zoo mlp = 3 Linear + 2 ReLU: every kernel ran on the device, as its own trace confirms.
    assert entry["trace"] == {"matmul": 3, "add": 3, "relu": 2}
    kit.check_receipt_against_trace(entry, DEVICE)
    assert entry["rel_l2"] <= 1e-5 and entry["clone_equal"]


def test_ascend_fallback_is_refused_by_default_with_the_fallen_back_ops(runs):
    entry = runs["report"][f"{runs['mlp']}|error"]
    assert entry["error"] == "FallbackError"
    assert "softmax (no kernel on the device)" in entry["message"]
    assert kit.host_ops(entry["receipt"], DEVICE) == {("softmax", NO_KERNEL): 1}


@pytest.mark.parametrize("policy", ["warn", "allow"])
def test_ascend_fallback_accepted_when_relaxed(runs, policy):
    entry = runs["report"][f"{runs['mlp']}|{policy}"]
    assert "error" not in entry, entry.get("message")
    assert entry["device"] == DEVICE and entry["rel_l2"] <= 1e-5
    assert any("softmax" in w for w in entry["warnings"]) == (policy == "warn")
    assert entry["receipt"]["policy"] == policy
    assert kit.host_ops(entry["receipt"], DEVICE) == {("softmax", NO_KERNEL): 1}
    kit.check_receipt_against_trace(entry, DEVICE)


def test_ascend_receipt_separates_missing_kernels_from_carried_placement(runs):
    entry = runs["report"][f"{runs['conv']}|allow"]
    receipt = entry["receipt"]
    # batch_norm and pool2d have no kernel on the device; the relu after batch_norm and the flatten after the pool
    # have one (relu: the simulated device's, flatten: Paddle's generic CUSTOM kernel) but inherit the CPU.
    assert kit.host_ops(receipt, DEVICE) == {("batch_norm", NO_KERNEL): 1, ("pool2d", NO_KERNEL): 1,
                                             ("relu", CARRIED_PLACEMENT): 1, ("flatten", CARRIED_PLACEMENT): 1}
    assert entry["trace"] == {"conv2d": 2, "add": 2, "relu": 1, "matmul": 1}
    kit.check_receipt_against_trace(entry, DEVICE)
    inventory = runs["report"]["_inventory"]
    assert "flatten" in inventory["generic"] and "relu" in inventory["own"]
    assert entry["rel_l2"] <= 1e-5


def test_ascend_black_list_forces_ops_off_the_device(env, models):
    env = dict(env, CUSTOM_DEVICE_BLACK_LIST="relu,matmul,add")
    plan = [["zoo:mlp", "error"], ["zoo:mlp", "allow"], [str(models / "convnet"), "allow"]]
    report = kit.child_value(kit.in_child("scenario_run", plan, DEVICE, env=env))
    refused = report["zoo:mlp|error"]
    assert refused["error"] == "FallbackError" and "forced off the device" in refused["message"]
    # Every kernel of the zoo MLP is black-listed: nothing runs on the device, and the receipt says so.
    allowed = report["zoo:mlp|allow"]
    assert kit.host_ops(allowed["receipt"], DEVICE) == {("matmul", FORCED_OFF): 3, ("add", FORCED_OFF): 3,
                                                        ("relu", FORCED_OFF): 2}
    assert allowed["trace"] == {}  # the device never saw a kernel
    assert allowed["receipt"]["actual"] == "cpu:0" and allowed["device"] == "cpu:0"
    assert any(f"requested {DEVICE} but" in r for r in allowed["receipt"]["fallback_reasons"])
    assert allowed["rel_l2"] <= 1e-5
    # The convnet keeps its convolutions on the device; the black-listed kernels are labelled as such.
    conv = report[f"{models / 'convnet'}|allow"]
    host = kit.host_ops(conv["receipt"], DEVICE)
    assert host[("relu", FORCED_OFF)] == 2 and host[("matmul", FORCED_OFF)] == 1 and host[("add", FORCED_OFF)] >= 1
    assert conv["trace"] == {"conv2d": 2}
    kit.check_receipt_against_trace(conv, DEVICE)
    assert any("CUSTOM_DEVICE_BLACK_LIST=add,matmul,relu" in e for e in conv["receipt"]["evidence"])


def test_ascend_zoo_matches_the_cpu_reference(env):
    plan = [[f"zoo:{name}", "allow"] for name in ZOO]
    report = kit.child_value(kit.in_child("scenario_run", plan, DEVICE, 2, 1, KIND, env=env))
    inventory = report.pop("_inventory")
    has_kernel = set(inventory["own"]) | set(inventory["generic"])
    for key, entry in report.items():
        assert "error" not in entry, (key, entry.get("message"))
        assert entry["rel_l2"] <= 1e-4, (key, entry["rel_l2"])
        assert entry["device"] == DEVICE and entry["clone_equal"], key
        kit.check_receipt_against_trace(entry, DEVICE)
        for (op, reason), _count in kit.host_ops(entry["receipt"], DEVICE).items():
            assert reason in (NO_KERNEL, CARRIED_PLACEMENT), (key, op, reason)
            # "carried" only for ops the device has a kernel for; "no kernel" only for ops it has none for
            assert (op in has_kernel) == (reason == CARRIED_PLACEMENT), (key, op, reason)
    # The models with ops the device lacks really fell back, and the receipt says which.
    assert ("batch_norm", NO_KERNEL) in kit.host_ops(report["zoo:resnet18|allow"]["receipt"], DEVICE)
    assert ("depthwise_conv2d", NO_KERNEL) in kit.host_ops(report["zoo:mobilenet_v2|allow"]["receipt"], DEVICE)
    assert ("softmax", NO_KERNEL) in kit.host_ops(report["zoo:transformer_encoder|allow"]["receipt"], DEVICE)


def test_ascend_auto_prefers_the_device_and_skips_it_when_it_would_fall_back(env, models):
    mlp = str(models / "mlp_softmax")
    chosen = kit.child_value(kit.in_child("scenario_auto", ["zoo:mlp", mlp], env=env))
    assert chosen["zoo:mlp"]["device"] == DEVICE and chosen["zoo:mlp"]["plugin"] == PLUGIN
    assert chosen[mlp]["device"] == "cpu:0"
    assert any(s.startswith(f"{DEVICE}:") and "softmax" in s for s in chosen[mlp]["auto_skipped"])


def test_ascend_plugin_loaded_after_paddle_import_is_an_error_not_an_abort(root, models):
    # Discovery (a fresh process) sees the device, but this process imported Paddle without the plugin:
    # enable_custom_device would abort it. hwdeploy must check first and raise.
    result = kit.in_child("scenario_predictor_error", "zoo:mlp", DEVICE, str(root),
                          env={"CUSTOM_DEVICE_ROOT": None})
    value = kit.child_value(result)  # ok => the child exited normally
    assert value["error"] == "DeviceNotFoundError", value
    assert f"no '{KIND}' CustomDevice plugin" in value["message"] and "CUSTOM_DEVICE_ROOT" in value["message"]
    assert (DEVICE, True) in [tuple(d) for d in value["devices"]]


def test_ascend_placement_is_read_in_a_fresh_process_when_paddle_ran_first(env, models):
    # The user's process ran Paddle's interpreter before hwdeploy could turn the kernel-program dump on:
    # the receipt must still name the fallen-back op, read from the same config in a fresh process.
    receipt = kit.child_value(kit.in_child("scenario_paddle_ran_first", str(models / "mlp_softmax"), DEVICE,
                                           env=env))
    assert any("placement read in a fresh process" in e for e in receipt["evidence"]), receipt["evidence"]
    assert receipt["ops_known"] and kit.host_ops(receipt, DEVICE) == {("softmax", NO_KERNEL): 1}
    assert kit.device_counts(receipt, DEVICE) == {"matmul": 2, "add": 2, "relu": 1}
