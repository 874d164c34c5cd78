"""The tests every Paddle CustomDevice vendor plugin runs (hwdeploy-ascend on ``npu``, hwdeploy-cambricon on
``mlu``, a third party's on its own type).

Each suite class holds the tests; a plugin's tests directory binds what it
expects of its plugin (a :class:`VendorUnderTest`, as the ``vendor`` fixture
of its conftest.py, see :func:`vendor_fixture`) and subclasses the suites in
its ``test_<plugin>_*.py`` files, so that ``pytest <plugin>/tests`` runs all of
them for that plugin, next to its own vendor-specific tests:

- :class:`PluginSuite`: the plugin without its device (discovery says why,
  errors instead of aborts, the vendor tool); plus
  :meth:`PluginSuite.check_hardware_zoo_parity_and_receipts`, which a plugin's
  hardware-marked test calls (``-m ascend`` in a lab with the real device);
- :class:`SimulatedDeviceSuite`: the plugin on the simulated CustomDevice built
  as its device type, honouring its visible-devices variable (see
  :mod:`hwdeploy_customdevice.testing.kit`);
- :class:`ConformanceSuite`: ``hwdeploy conformance`` on the simulated device.
"""

from __future__ import annotations

import importlib
import os
import shutil
import stat
import subprocess
import sys
import textwrap
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from packaging.requirements import Requirement

import hwdeploy
from hwdeploy import zoo
from hwdeploy.contract.manager import get_plugin_manager
from hwdeploy.contract.receipt import CARRIED_PLACEMENT, FORCED_OFF, NO_KERNEL

import hwdeploy_customdevice
from hwdeploy_customdevice import simulated, smi
from hwdeploy_customdevice.testing import kit

#: The hooks a CustomDevice vendor plugin implements (through CustomDeviceVendor.hookimpls()).
HOOKS = {"hwdeploy_discover_devices", "hwdeploy_create_predictor", "hwdeploy_utilization_sampler",
         "hwdeploy_option_schemas"}


@dataclass(frozen=True)
class VendorUnderTest:
    """What the tests expect of one vendor plugin, written out by its tests (not read from the plugin)."""

    plugin: str  # entry-point name, "ascend"
    kind: str  # device kind, also Paddle's device type: "npu"
    visible_env: str  # the vendor runtime's visible-devices variable (the simulated device honours it too)
    install_hint: str  # what an absent device's reason must tell the user to install
    smi: str  # the vendor tool
    smi_usage_args: str  # the arguments the sampler must give the tool for physical device 0
    smi_usage_output: str  # what the tool prints then: 37% busy
    hardware: str  # "Huawei Ascend NPU", for skip reasons
    plugin_object: str  # "hwdeploy_ascend.plugin:ASCEND", the plugin's CustomDeviceVendor
    #: Another installed CustomDevice plugin's kind: must be reported absent on this simulated device ("" = none).
    other_kind: str = ""
    distribution: str = ""  # the plugin's distribution; default hwdeploy-<plugin>

    def __post_init__(self):
        if not self.distribution:
            object.__setattr__(self, "distribution", f"hwdeploy-{self.plugin}")

    @property
    def device(self) -> str:
        return f"{self.kind}:0"

    def custom_device_vendor(self) -> hwdeploy_customdevice.CustomDeviceVendor:
        """The plugin's own :class:`~hwdeploy_customdevice.CustomDeviceVendor` (``plugin_object``)."""
        module, _, name = self.plugin_object.partition(":")
        return getattr(importlib.import_module(module), name)

    def ours(self, found) -> list:
        """The devices of ``found`` this plugin reports."""
        return [d for d in found if d.kind == self.kind and d.plugin == self.plugin]


def vendor_fixture(vendor: VendorUnderTest):
    """The ``vendor`` fixture a plugin's tests/conftest.py binds: ``vendor = vendor_fixture(VendorUnderTest(...))``."""

    @pytest.fixture(scope="session", name="vendor")
    def fixture() -> VendorUnderTest:
        return vendor

    return fixture


class _Suite:
    """What every suite's tests share."""

    @pytest.fixture(autouse=True)
    def forget_discovery(self):
        """Tests here change the environment discovery depends on: never leave their devices cached."""
        yield
        from hwdeploy.api import clear_discovery_cache

        clear_discovery_cache()


# ---------------------------------------------------------------------------------------------- without the device


def fake_tool(directory: Path, name: str, body: str) -> Path:
    """An executable ``name`` in ``directory`` (a stand-in for the vendor tool, which this machine lacks)."""
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / name
    path.write_text("#!/bin/sh\n" + textwrap.dedent(body))
    path.chmod(path.stat().st_mode | stat.S_IEXEC)
    return path


class PluginSuite(_Suite):
    """The plugin without its device: discovery says why, errors instead of aborts, the vendor tool."""

    @pytest.fixture
    def no_plugin_root(self, tmp_path, monkeypatch) -> Path:
        """A CUSTOM_DEVICE_ROOT with no plugin library in it: Paddle registers no custom device."""
        root = tmp_path / "empty-root"
        root.mkdir()
        monkeypatch.setenv("CUSTOM_DEVICE_ROOT", str(root))
        return root

    def test_plugin_loads_through_its_entry_point(self, vendor):
        manager = get_plugin_manager()
        status = manager.statuses[vendor.plugin]
        assert status.state == "loaded" and status.distribution == vendor.distribution, status.error
        # Its compatibility declaration: a hwdeploy version range, checked before the plugin is imported.
        assert any(r.name == "hwdeploy" and r.specifier for r in map(Requirement, status.requires)), status.requires
        hooks = {caller.name for caller in manager.pm.get_hookcallers(manager.pm.get_plugin(vendor.plugin))}
        assert hooks == HOOKS

    def test_discovery_without_a_plugin_says_what_is_missing(self, vendor, no_plugin_root):
        found = vendor.ours(hwdeploy.devices(refresh=True))
        assert len(found) == 1
        absent = found[0]
        assert not absent.available and absent.id == vendor.device and absent.priority == 90
        assert f"no '{vendor.kind}' CustomDevice plugin" in absent.reason
        assert str(no_plugin_root) in absent.reason  # where it looked
        assert vendor.install_hint in absent.reason and "CUSTOM_DEVICE_ROOT" in absent.reason  # how to fix it
        if shutil.which(vendor.smi) is None:
            assert f"{vendor.smi} not found on PATH" in absent.reason
        assert hwdeploy.devices()[0].available  # the CPU is still there, listed first

    def test_predictor_without_the_device_is_a_clear_error_not_an_abort(self, vendor, no_plugin_root):
        result = kit.in_child("scenario_predictor_error", "zoo:mlp", vendor.kind, None,
                              env={"CUSTOM_DEVICE_ROOT": str(no_plugin_root)})
        value = kit.child_value(result)  # ok: the child exited normally (no SIGABRT)
        assert result.returncode == 0
        assert value["error"] == "DeviceNotFoundError", value
        assert f"device '{vendor.kind}' is not available" in value["message"]
        assert f"no '{vendor.kind}' CustomDevice plugin" in value["message"]
        assert "cpu:0" in value["message"]  # what is available instead

    def test_unguarded_enable_custom_device_would_abort(self, vendor, no_plugin_root):
        """Why hwdeploy checks first: Paddle 3.3.1 aborts the process for an unregistered device type."""
        model = kit.tiny_models() / "mlp_softmax"
        code = textwrap.dedent(f"""
            from paddle import inference
            config = inference.Config({str(model / 'model.json')!r}, {str(model / 'model.pdiparams')!r})
            config.enable_custom_device({vendor.kind!r}, 0)
            inference.create_predictor(config)
        """)
        done = subprocess.run([sys.executable, "-c", code], capture_output=True, timeout=120,
                              env=dict(os.environ, GLOG_minloglevel="2"))
        assert done.returncode != 0, "Paddle no longer aborts here: the guard is still right, update this note"

    def test_vendor_tool_is_reported_and_sampled(self, vendor, tmp_path, monkeypatch, no_plugin_root):
        bin_dir = tmp_path / "bin"
        (tmp_path / "usage.txt").write_text(vendor.smi_usage_output)
        fake_tool(bin_dir, vendor.smi, f"""
            if [ "$*" = "{vendor.smi_usage_args}" ]; then cat {tmp_path / 'usage.txt'}; else echo "{vendor.smi} 1.0"; fi
        """)
        monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
        absent = vendor.ours(hwdeploy.devices(refresh=True))[0]
        assert absent.details["smi"] == f"{vendor.smi} ran" and f"{vendor.smi} ran" in absent.reason

        device = hwdeploy.Device(vendor.kind, 0, backend=hwdeploy_customdevice.BACKEND, details={"physical_id": 0})
        plugin, sampler = get_plugin_manager().call_first("hwdeploy_utilization_sampler", device=device)
        assert plugin == vendor.plugin
        sampler.interval = 0.05
        sampler.start()
        time.sleep(0.4)
        stats = sampler.stop()
        assert stats["samples"] >= 1 and stats["mean_busy"] == pytest.approx(0.37) and stats["max_busy"] == 0.37

    def test_no_vendor_tool_means_no_sampler(self, vendor, tmp_path, monkeypatch):
        monkeypatch.setenv("PATH", str(tmp_path))  # nothing on PATH
        device = hwdeploy.Device(vendor.kind, 0, backend=hwdeploy_customdevice.BACKEND)
        assert get_plugin_manager().call_first("hwdeploy_utilization_sampler", device=device) is None

    def test_hanging_vendor_tool_does_not_hang_discovery(self, vendor, tmp_path, monkeypatch, no_plugin_root):
        bin_dir = tmp_path / "bin"
        fake_tool(bin_dir, vendor.smi, "sleep 60\n")
        monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
        monkeypatch.setattr(smi, "SMI_TIMEOUT", 0.5)
        absent = vendor.ours(hwdeploy.devices(refresh=True))[0]
        assert not absent.available and f"{vendor.smi} failed: timed out" in absent.details["smi"]

    def test_plugin_object_is_what_the_tests_expect(self, vendor):
        """The plugin's CustomDeviceVendor declares the kind, variable and tool these tests check."""
        plugin_vendor = vendor.custom_device_vendor()
        assert (plugin_vendor.device_type, plugin_vendor.visible_env, plugin_vendor.smi) == (
            vendor.kind, vendor.visible_env, vendor.smi)
        assert set(plugin_vendor.hookimpls()) == HOOKS

    def test_every_option_refuses_every_wrong_value(self, vendor):
        """The vendor's predictor hook checks each option against the schema ``hwdeploy options`` shows."""
        from hwdeploy.sdk.testing import assert_refuses_wrong_options
        from hwdeploy_customdevice.vendor import BACKEND

        plugin_vendor = vendor.custom_device_vendor()
        device = hwdeploy.Device(vendor.kind, 0, backend=BACKEND)
        model = zoo.get("mlp").model
        assert assert_refuses_wrong_options(plugin_vendor.options,
                                            lambda o: plugin_vendor.create_predictor(model, device, o)) >= 20
        declared = [s.owner for p, s in hwdeploy.option_schemas() if p == vendor.plugin]
        assert declared == [f"{vendor.kind} backend"]

    def test_plugin_offers_no_conversion_target(self, vendor):
        """Paddle Inference runs the model as it is: nothing to convert (Lite's NNAdapter targets for such
        devices are the arm plugin's)."""
        assert vendor.plugin not in {plugin for plugin, _target in hwdeploy.conversion_targets()}

    # ---- hardware lab: a plugin's own test, marked with its hardware marker, calls this

    @staticmethod
    def real_device_missing(vendor: VendorUnderTest) -> str | None:
        """Why there is no real device here (None when there is one)."""
        if shutil.which(vendor.smi) is None:
            return (f"needs a {vendor.hardware} ({vendor.smi} not found on PATH); run `pytest -m {vendor.plugin}`"
                    " in the hardware lab")
        if "simdevice" in os.environ.get("CUSTOM_DEVICE_ROOT", ""):
            return "CUSTOM_DEVICE_ROOT points at the simulated device, not at the vendor's plugin"
        devices = vendor.ours(hwdeploy.devices(refresh=True))
        if not devices or not devices[0].available:
            return (f"{vendor.smi} is present but Paddle has no usable {vendor.kind}:"
                    f" {devices[0].reason if devices else 'not reported'}")
        return None

    def check_hardware_zoo_parity_and_receipts(self, vendor: VendorUnderTest) -> None:
        """Every zoo model on the real device: it runs, the receipt knows each op's place, parity holds."""
        reason = self.real_device_missing(vendor)
        if reason:
            pytest.skip(reason)
        plan = [[f"zoo:{name}", "allow"] for name in zoo.names()]
        report = kit.child_value(kit.in_child("scenario_run", plan, vendor.device, 2, 1, vendor.kind))
        report.pop("_inventory")
        for key, entry in report.items():
            assert "error" not in entry, (key, entry.get("message"))
            assert entry["receipt"]["ops_known"], key
            assert entry["rel_l2"] <= 1e-3, (key, entry["rel_l2"])  # accelerators may accumulate in reduced precision


# ---------------------------------------------------------------------------------------------- simulated device


class SimulatedDeviceSuite(_Suite):
    """The plugin on a simulated Paddle CustomDevice built as its device type (:mod:`hwdeploy_customdevice.simulated`).

    The simulated device is real C++ loaded by Paddle: Paddle Inference runs
    matmul/add/relu/conv2d (float32) on it and silently falls back to the CPU for
    every other op, exactly like a vendor plugin with gaps. The device logs each
    kernel it executes (``SIMDEV_TRACE``): that trace, and Paddle's registered
    kernel inventory, are the independent ground truth the receipts are checked
    against. Every test that needs the device runs Paddle in a child process with
    ``CUSTOM_DEVICE_ROOT`` set, because Paddle loads plugins only when imported.
    """

    pytestmark = [pytest.mark.slow]

    @pytest.fixture(scope="class")
    @classmethod
    def root(cls, vendor) -> Path:
        return kit.sim_root(vendor.kind, vendor.visible_env)

    @pytest.fixture(scope="class")
    @classmethod
    def models(cls, root) -> Path:
        return kit.tiny_models()

    @pytest.fixture(scope="class")
    @classmethod
    def env(cls, vendor, root, tmp_path_factory) -> dict:
        trace = tmp_path_factory.mktemp("trace") / "trace.txt"
        return {"CUSTOM_DEVICE_ROOT": str(root), simulated.TRACE_ENV: str(trace), "CUSTOM_DEVICE_BLACK_LIST": None,
                vendor.visible_env: None}

    @pytest.fixture(scope="class")
    @classmethod
    def runs(cls, vendor, env, models) -> dict[str, Any]:
        """One child: the supported-only zoo MLP fail-closed, the softmax MLP under each policy, the convnet."""
        mlp, conv = str(models / "mlp_softmax"), str(models / "convnet")
        plan = [["zoo:mlp", "error"], [mlp, "error"], [mlp, "warn"], [mlp, "allow"], [conv, "allow"]]
        report = kit.child_value(kit.in_child("scenario_run", plan, vendor.device, 2, 1, vendor.kind, env=env))
        return {"report": report, "mlp": mlp, "conv": conv}

    def test_simulated_device_registers_exactly_its_kernels(self, runs):
        inventory = runs["report"]["_inventory"]
        assert inventory["count"] == 1
        # Paddle's own inventory agrees with what kernels.cc registers: those four, float32 only.
        assert inventory["own"] == {name: ["float32"] for name in sorted(kit.KERNELS)}
        assert "softmax" not in inventory["own"] and "softmax" not in inventory["generic"]

    def test_discovery_lists_the_simulated_device(self, vendor, root, monkeypatch):
        monkeypatch.setenv("CUSTOM_DEVICE_ROOT", str(root))
        monkeypatch.delenv(vendor.visible_env, raising=False)
        found = hwdeploy.devices(refresh=True)
        ours = [d for d in found if d.kind == vendor.kind]
        assert [(d.id, d.available, d.plugin, d.backend) for d in ours] == [
            (vendor.device, True, vendor.plugin, "paddle-inference")]
        assert ours[0].priority == 90
        # Available devices come first, best first: "auto" ranks the accelerator above the CPU.
        available = [d for d in found if d.available]
        assert available[0].id == vendor.device
        assert [d for d in available if d.kind == "cpu"][0].priority < ours[0].priority
        assert any(str(root) in lib for lib in ours[0].details["plugin_libraries"])
        if vendor.other_kind:  # another vendor's kind is reported absent, naming what Paddle did register
            other = [d for d in found if d.kind == vendor.other_kind]
            assert other and not other[0].available and f"registered types: {vendor.kind}" in other[0].reason

    def test_visible_devices_variable_is_honoured(self, vendor, root, monkeypatch):
        monkeypatch.setenv("CUSTOM_DEVICE_ROOT", str(root))
        monkeypatch.setenv(vendor.visible_env, "")
        hidden = [d for d in hwdeploy.devices(refresh=True) if d.kind == vendor.kind]
        assert len(hidden) == 1 and not hidden[0].available
        assert f"{vendor.visible_env}=''" in hidden[0].reason and "no visible device" in hidden[0].reason

        monkeypatch.setenv(simulated.COUNT_ENV, "3")
        monkeypatch.setenv(vendor.visible_env, "2,0")
        shown = [d for d in hwdeploy.devices(refresh=True) if d.kind == vendor.kind]
        assert [(d.id, d.available, d.details["physical_id"]) for d in shown] == [
            (vendor.device, True, 2), (f"{vendor.kind}:1", True, 0)]

    def test_supported_only_model_passes_fail_closed(self, vendor, runs):
        device = vendor.device
        entry = runs["report"]["zoo:mlp|error"]
        assert "error" not in entry, entry.get("message")
        assert entry["device"] == device and entry["warnings"] == []
        receipt = entry["receipt"]
        assert receipt["actual"] == device and receipt["fallback_reasons"] == []
        assert kit.host_ops(receipt, device) == {}
        # zoo mlp = 3 Linear + 2 ReLU: every kernel ran on the device, as its own trace confirms.
        assert entry["trace"] == {"matmul": 3, "add": 3, "relu": 2}
        kit.check_receipt_against_trace(entry, device)
        assert entry["rel_l2"] <= 1e-5 and entry["clone_equal"]

    def test_fallback_is_refused_by_default_with_the_fallen_back_ops(self, vendor, runs):
        entry = runs["report"][f"{runs['mlp']}|error"]
        assert entry["error"] == "FallbackError"
        assert "softmax (no kernel on the device)" in entry["message"]
        assert kit.host_ops(entry["receipt"], vendor.device) == {("softmax", NO_KERNEL): 1}

    @pytest.mark.parametrize("policy", ["warn", "allow"])
    def test_fallback_accepted_when_relaxed(self, vendor, runs, policy):
        entry = runs["report"][f"{runs['mlp']}|{policy}"]
        assert "error" not in entry, entry.get("message")
        assert entry["device"] == vendor.device and entry["rel_l2"] <= 1e-5
        assert any("softmax" in w for w in entry["warnings"]) == (policy == "warn")
        assert entry["receipt"]["policy"] == policy
        assert kit.host_ops(entry["receipt"], vendor.device) == {("softmax", NO_KERNEL): 1}
        kit.check_receipt_against_trace(entry, vendor.device)

    def test_receipt_separates_missing_kernels_from_carried_placement(self, vendor, runs):
        entry = runs["report"][f"{runs['conv']}|allow"]
        receipt = entry["receipt"]
        # batch_norm and pool2d have no kernel on the device; the relu after batch_norm and the flatten after the
        # pool have one (relu: the simulated device's, flatten: Paddle's generic CUSTOM kernel) but inherit the CPU.
        assert kit.host_ops(receipt, vendor.device) == {("batch_norm", NO_KERNEL): 1, ("pool2d", NO_KERNEL): 1,
                                                        ("relu", CARRIED_PLACEMENT): 1,
                                                        ("flatten", CARRIED_PLACEMENT): 1}
        assert entry["trace"] == {"conv2d": 2, "add": 2, "relu": 1, "matmul": 1}
        kit.check_receipt_against_trace(entry, vendor.device)
        inventory = runs["report"]["_inventory"]
        assert "flatten" in inventory["generic"] and "relu" in inventory["own"]
        assert entry["rel_l2"] <= 1e-5

    def test_black_list_forces_ops_off_the_device(self, vendor, env, models):
        device = vendor.device
        env = dict(env, CUSTOM_DEVICE_BLACK_LIST="relu,matmul,add")
        plan = [["zoo:mlp", "error"], ["zoo:mlp", "allow"], [str(models / "convnet"), "allow"]]
        report = kit.child_value(kit.in_child("scenario_run", plan, device, env=env))
        refused = report["zoo:mlp|error"]
        assert refused["error"] == "FallbackError" and "forced off the device" in refused["message"]
        # Every kernel of the zoo MLP is black-listed: nothing runs on the device, and the receipt says so.
        allowed = report["zoo:mlp|allow"]
        assert kit.host_ops(allowed["receipt"], device) == {("matmul", FORCED_OFF): 3, ("add", FORCED_OFF): 3,
                                                            ("relu", FORCED_OFF): 2}
        assert allowed["trace"] == {}  # the device never saw a kernel
        assert allowed["receipt"]["actual"] == "cpu:0" and allowed["device"] == "cpu:0"
        assert any(f"requested {device} but" in r for r in allowed["receipt"]["fallback_reasons"])
        assert allowed["rel_l2"] <= 1e-5
        # The convnet keeps its convolutions on the device; the black-listed kernels are labelled as such.
        conv = report[f"{models / 'convnet'}|allow"]
        host = kit.host_ops(conv["receipt"], device)
        assert host[("relu", FORCED_OFF)] == 2 and host[("matmul", FORCED_OFF)] == 1
        assert host[("add", FORCED_OFF)] >= 1
        assert conv["trace"] == {"conv2d": 2}
        kit.check_receipt_against_trace(conv, device)
        assert any("CUSTOM_DEVICE_BLACK_LIST=add,matmul,relu" in e for e in conv["receipt"]["evidence"])

    def test_zoo_matches_the_cpu_reference(self, vendor, env):
        device = vendor.device
        plan = [[f"zoo:{name}", "allow"] for name in zoo.names()]  # every zoo model
        report = kit.child_value(kit.in_child("scenario_run", plan, device, 2, 1, vendor.kind, env=env))
        inventory = report.pop("_inventory")
        has_kernel = set(inventory["own"]) | set(inventory["generic"])
        for key, entry in report.items():
            assert "error" not in entry, (key, entry.get("message"))
            assert entry["rel_l2"] <= 1e-4, (key, entry["rel_l2"])
            assert entry["device"] == device and entry["clone_equal"], key
            kit.check_receipt_against_trace(entry, device)
            for (op, reason), _count in kit.host_ops(entry["receipt"], device).items():
                assert reason in (NO_KERNEL, CARRIED_PLACEMENT), (key, op, reason)
                # "carried" only for ops the device has a kernel for; "no kernel" only for ops it has none for
                assert (op in has_kernel) == (reason == CARRIED_PLACEMENT), (key, op, reason)
        # The models with ops the device lacks really fell back, and the receipt says which.
        assert ("batch_norm", NO_KERNEL) in kit.host_ops(report["zoo:resnet18|allow"]["receipt"], device)
        assert ("depthwise_conv2d", NO_KERNEL) in kit.host_ops(report["zoo:mobilenet_v2|allow"]["receipt"], device)
        assert ("softmax", NO_KERNEL) in kit.host_ops(report["zoo:transformer_encoder|allow"]["receipt"], device)

    def test_auto_prefers_the_device_and_skips_it_when_it_would_fall_back(self, vendor, env, models):
        mlp = str(models / "mlp_softmax")
        chosen = kit.child_value(kit.in_child("scenario_auto", ["zoo:mlp", mlp], env=env))
        assert chosen["zoo:mlp"]["device"] == vendor.device and chosen["zoo:mlp"]["plugin"] == vendor.plugin
        assert chosen[mlp]["device"] == "cpu:0"
        assert any(s.startswith(f"{vendor.device}:") and "softmax" in s for s in chosen[mlp]["auto_skipped"])

    def test_plugin_loaded_after_paddle_import_is_an_error_not_an_abort(self, vendor, root, models):
        # Discovery (a fresh process) sees the device, but this process imported Paddle without the plugin:
        # enable_custom_device would abort it. hwdeploy must check first and raise.
        result = kit.in_child("scenario_predictor_error", "zoo:mlp", vendor.device, str(root),
                              env={"CUSTOM_DEVICE_ROOT": None})
        value = kit.child_value(result)  # ok => the child exited normally
        assert value["error"] == "DeviceNotFoundError", value
        assert f"no '{vendor.kind}' CustomDevice plugin" in value["message"]
        assert "CUSTOM_DEVICE_ROOT" in value["message"]
        assert (vendor.device, True) in [tuple(d) for d in value["devices"]]


# ---------------------------------------------------------------------------------------------- conformance


def run_conformance(vendor: VendorUnderTest, tmp_path: Path, models: list[str], root: Path) -> tuple[int, dict]:
    """``hwdeploy conformance`` (a fresh process) on the simulated device: its exit code and JSON report."""
    import json

    report = tmp_path / f"report-{len(models)}.json"
    cmd = [sys.executable, "-m", "hwdeploy", "conformance", "--device", vendor.device, "--models", *models,
           "--scope", "mandatory", "--checks", "parity,fallback_receipt", "--examples", "2", "--no-progress",
           "--report", str(report)]
    env = dict(os.environ, CUSTOM_DEVICE_ROOT=str(root), OMP_NUM_THREADS="1")
    env.pop("CUSTOM_DEVICE_BLACK_LIST", None)
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=600, env=env)
    assert report.exists(), done.stdout + done.stderr
    return done.returncode, json.loads(report.read_text())


class ConformanceSuite:
    """``hwdeploy conformance`` on the simulated device: it reports the fallback, with evidence."""

    pytestmark = [pytest.mark.slow]

    def test_conformance_reports_the_fallback_with_evidence_and_passes_supported_models(self, vendor, tmp_path):
        pytest.importorskip("hwdeploy_conformance",
                            reason="the conformance suite (pip install -e conformance) is not installed")
        root = kit.sim_root(vendor.kind, vendor.visible_env)
        softmax_mlp = str(kit.tiny_models() / "mlp_softmax")
        code, report = run_conformance(vendor, tmp_path, ["zoo:mlp", softmax_mlp], root)
        assert code != 0 and report["summary"]["conformant"] is False
        assert report["plugin"]["name"] == vendor.plugin and report["device"]["id"] == vendor.device
        checks = {c["id"]: c for c in report["checks"]}
        failed = checks["mlp_softmax/fp32/fallback_receipt"]
        assert failed["status"] == "failed" and "softmax" in failed["message"]
        assert failed["figures"]["off_device_ops_by_reason"] == {"no kernel on the device": ["softmax x1 on cpu:0"]}
        assert any("kernel program" in e for e in failed["figures"]["evidence"])
        assert checks["mlp_softmax/fp32/parity"]["status"] == "passed"  # right numbers, wrong place
        assert checks["mlp/fp32/fallback_receipt"]["status"] == "passed"

        # Only supported ops: every check that ran passes, nothing unexpected. (Only two checks were selected:
        # whether that alone makes the device "conformant" is the verdict's business, not this test's.)
        _code, report = run_conformance(vendor, tmp_path, ["zoo:mlp"], root)
        assert {c["status"] for c in report["checks"]} == {"passed"}, report["checks"]
        assert report["summary"]["unexpected_failures"] == [], report["summary"]
