"""One hook contract, enforced by the plugin manager: each rule broken by a plugin installed through a real entry
point, and in every case the plugin is reported (``hwdeploy plugins``) while the core and the other plugins work."""

import json
import os
import subprocess
import sys

import pytest

import hwdeploy
from hwdeploy.contract.manager import disable_plugins, get_plugin_manager
from hwdeploy.sdk.testing import install_plugin, plugins_on_path

# Each plugin breaks one rule of the contract; the text is what its status must say.
RULE_BREAKERS = {
    "one-target-not-a-list": ("""
from hwdeploy import ConversionTarget, hookimpl

@hookimpl
def hwdeploy_conversion_targets():
    return ConversionTarget("lonely", "a target returned bare, not in a list")
""", "hwdeploy_conversion_targets", "ConversionTarget instead of a list of hwdeploy.ConversionTarget"),
    "targets-of-wrong-type": ("""
from hwdeploy import hookimpl

@hookimpl
def hwdeploy_conversion_targets():
    return ["onnx-ish"]
""", "hwdeploy_conversion_targets", "a list instead of a list of hwdeploy.ConversionTarget"),
    "commands-of-wrong-type": ("""
from hwdeploy import hookimpl

@hookimpl
def hwdeploy_cli_commands():
    return [("frob", "not a CliCommand")]
""", "hwdeploy_cli_commands", "a list instead of a list of hwdeploy.CliCommand"),
    "command-named-run": ("""
from hwdeploy import CliCommand, hookimpl

@hookimpl
def hwdeploy_cli_commands():
    return [CliCommand("run", "shadows hwdeploy run", lambda parser: None, lambda args: 0)]
""", "hwdeploy_cli_commands", "command 'run' is already provided by hwdeploy itself"),
    "a-duplicate-target": ("""
from hwdeploy import ConversionTarget, hookimpl

@hookimpl
def hwdeploy_conversion_targets():
    return [ConversionTarget("shared-target", "offered second")]
""", "hwdeploy_conversion_targets", "conversion target 'shared-target' is already provided by plugin 'z-target-owner'"),
    "sampler-of-wrong-type": ("""
from hwdeploy import Device, hookimpl

@hookimpl
def hwdeploy_discover_devices():
    return [Device("idlesim", 0, backend="none", available=False, reason="simulated")]

@hookimpl
def hwdeploy_utilization_sampler(device):
    return {"mean_busy": 1.0}
""", "hwdeploy_utilization_sampler", "dict without start() and stop() (a UtilizationSampler)"),
    "schemas-of-wrong-type": ("""
from hwdeploy import hookimpl

@hookimpl
def hwdeploy_option_schemas():
    return [{"threads": int}]
""", "hwdeploy_option_schemas", "a list instead of a list of hwdeploy.sdk.options.OptionSchema"),
    "a-cpu-schema-twin": ("""
from hwdeploy import hookimpl
from hwdeploy.sdk.options import THREADS, OptionSchema

@hookimpl
def hwdeploy_option_schemas():
    return [OptionSchema("cpu backend", [THREADS])]
""", "hwdeploy_option_schemas", "option schema 'cpu backend' is already provided by plugin 'cpu'"),
    "hook-wrapper": ("""
from hwdeploy import hookimpl

@hookimpl(hookwrapper=True)
def hwdeploy_discover_devices():
    outcome = yield
""", None, "declares hook wrapper(s) ['hwdeploy_discover_devices']"),
}
GOOD_TARGET = """
from hwdeploy import ConversionTarget, hookimpl

@hookimpl
def hwdeploy_conversion_targets():
    return [ConversionTarget("shared-target", "offered first")]
"""


@pytest.fixture()
def contract_site(tmp_path):
    install_plugin(tmp_path, "z-target-owner", GOOD_TARGET)
    for name, (source, _hook, _error) in RULE_BREAKERS.items():
        install_plugin(tmp_path, name, source)
    return tmp_path


def _statuses(site):
    env = dict(os.environ, PYTHONPATH=str(site), COLUMNS="250")
    out = subprocess.run([sys.executable, "-m", "hwdeploy", "plugins", "--json"], capture_output=True, text=True,
                         env=env, timeout=120)
    assert out.returncode == 0, out.stderr
    return {row["name"]: row for row in json.loads(out.stdout)}, env


def test_hwdeploy_plugins_names_every_broken_rule(contract_site):
    rows, _ = _statuses(contract_site)
    for name, (_source, hook, error) in RULE_BREAKERS.items():
        row = rows[name]
        if hook == "hwdeploy_utilization_sampler":
            continue  # only the conformance suite asks for samplers: checked in-process below
        if hook is None:  # refused at registration
            assert row["state"] == "import-failed" and error in row["error"], row
        else:
            assert row["state"] == "hook-failed" and error in row["hook_errors"][hook], row
    assert rows["z-target-owner"]["state"] == "loaded" and rows["cpu"]["state"] == "loaded"


def test_the_core_keeps_working_beside_contract_breakers(contract_site, tiny_mlp):
    with plugins_on_path(contract_site):
        targets = hwdeploy.conversion_targets()
        owners = {t.name: plugin for plugin, t in targets}
        # The plugin whose hooks are called first (pluggy: the last registered; entry points register by name)
        # keeps the name, as it would win hwdeploy_convert_model; the duplicate is dropped and marked.
        assert owners["shared-target"] == "z-target-owner"
        assert "lonely" not in owners and all(isinstance(t, hwdeploy.ConversionTarget) for _p, t in targets)
        assert {d.kind for d in hwdeploy.devices()} >= {"cpu", "idlesim"}
        sampler = get_plugin_manager().call_first("hwdeploy_utilization_sampler",
                                                  device=hwdeploy.devices()[0])
        assert sampler is None  # the dict never reaches the caller, and the plugin is marked
        assert "dict without start() and stop()" in get_plugin_manager().statuses[
            "sampler-of-wrong-type"].hook_errors["hwdeploy_utilization_sampler"]
        p = hwdeploy.predictor(tiny_mlp, device="cpu")
        assert p.device.kind == "cpu"
    _rows, env = _statuses(contract_site)
    listing = subprocess.run([sys.executable, "-m", "hwdeploy", "convert", "--list", "--json"], capture_output=True,
                             text=True, env=env, timeout=120)
    assert listing.returncode == 0, listing.stderr
    assert "shared-target" in {row["target"] for row in json.loads(listing.stdout)}
    devices = subprocess.run([sys.executable, "-m", "hwdeploy", "devices", "--json"], capture_output=True, text=True,
                             env=env, timeout=120)
    assert devices.returncode == 0 and "idlesim:0" in {d["id"] for d in json.loads(devices.stdout)}
    # `hwdeploy run` is still hwdeploy's own command, not the plugin's.
    help_text = subprocess.run([sys.executable, "-m", "hwdeploy", "run", "--help"], capture_output=True, text=True,
                               env=env, timeout=120)
    assert "shadows hwdeploy run" not in help_text.stdout and "--device" in help_text.stdout


def test_a_command_whose_parser_raises_reports_itself(tmp_path):
    install_plugin(tmp_path, "bad-parser", """
from hwdeploy import CliCommand, hookimpl

def configure(parser):
    raise RuntimeError("argparse setup exploded")

@hookimpl
def hwdeploy_cli_commands():
    return [CliCommand("frobnicate", "a command that cannot configure itself", configure, lambda args: 0)]
""")
    rows, env = _statuses(tmp_path)
    assert "argparse setup exploded" in rows["bad-parser"]["hook_errors"]["hwdeploy_cli_commands"]
    used = subprocess.run([sys.executable, "-m", "hwdeploy", "frobnicate"], capture_output=True, text=True, env=env,
                          timeout=120)
    assert used.returncode != 0 and "is broken" in used.stderr and "argparse setup exploded" in used.stderr


def test_disabled_plugins_are_never_imported(tmp_path):
    marker = tmp_path / "imported.txt"
    install_plugin(tmp_path, "noisy", f"""
from pathlib import Path
Path({str(marker)!r}).write_text("imported")
from hwdeploy import Device, hookimpl

@hookimpl
def hwdeploy_discover_devices():
    return [Device("noisysim", 0, backend="none", available=False, reason="simulated")]
""")
    env = dict(os.environ, PYTHONPATH=str(tmp_path), HWDEPLOY_DISABLE_PLUGINS="noisy, other")
    out = subprocess.run([sys.executable, "-m", "hwdeploy", "plugins", "--json"], capture_output=True, text=True,
                         env=env, timeout=120)
    rows = {row["name"]: row for row in json.loads(out.stdout)}
    assert rows["noisy"]["state"] == "disabled" and "HWDEPLOY_DISABLE_PLUGINS" in rows["noisy"]["error"]
    assert not marker.exists()
    # The same through the API, in this process; enabling again loads it.
    with plugins_on_path(tmp_path):
        disable_plugins(["noisy"])
        try:
            assert "noisysim" not in {d.kind for d in hwdeploy.devices()} and not marker.exists()
            assert get_plugin_manager().statuses["noisy"].state == "disabled"
        finally:
            disable_plugins()
        assert "noisysim" in {d.kind for d in hwdeploy.devices()} and marker.exists()
