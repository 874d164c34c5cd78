"""hwdeploy.convert (cached by content hash) and the command line, through real entry points."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

import hwdeploy
from hwdeploy import ConversionError, UnsupportedOpsError
from hwdeploy.sdk.testing import install_plugin, plugins_on_path

# A converter that "compiles" a model to the sorted list of its op types, refusing softmax.
CONVERTER = """
import json
from hwdeploy import Artifact, ConversionTarget, hookimpl
from hwdeploy.errors import UnsupportedOpsError
from hwdeploy.sdk.paddle_format import load_pir_program

CALLS = []

@hookimpl
def hwdeploy_conversion_targets():
    return [ConversionTarget("oplist", "sorted op types (test)", device_kinds=("oplist",))]

@hookimpl
def hwdeploy_convert_model(model, target, options, output_dir):
    if target != "oplist":
        return None
    CALLS.append(model.sha256)
    ops = sorted(set(load_pir_program(model.program).op_types()))
    banned = [op for op in ops if op in options.get("banned", [])]
    if banned:
        raise UnsupportedOpsError(f"oplist cannot express {banned}", banned)
    (output_dir / "ops.json").write_text(json.dumps(ops))
    return Artifact("oplist", output_dir, ["ops.json"], {"count": len(ops)})
"""


@pytest.fixture()
def converter_site(tmp_path, monkeypatch):
    monkeypatch.setenv("HWDEPLOY_CACHE_DIR", str(tmp_path / "cache"))
    install_plugin(tmp_path / "site", "oplist", CONVERTER)
    return tmp_path / "site"


def test_convert_caches_by_content_hash_and_options(converter_site, tiny_mlp):
    with plugins_on_path(converter_site):
        import hwdeploy_test_oplist as plugin

        first = hwdeploy.convert(tiny_mlp, "oplist")
        assert not first.cached and json.loads(first.path().read_text())[0].startswith(("builtin.", "pd_op."))
        assert "pd_op.matmul" in json.loads(first.path().read_text())
        second = hwdeploy.convert(tiny_mlp / "model", "oplist")
        assert second.cached and second.directory == first.directory and len(plugin.CALLS) == 1
        third = hwdeploy.convert(tiny_mlp, "oplist", banned=["pd_op.softmax"])  # other options: another entry
        assert not third.cached and third.directory != first.directory and len(plugin.CALLS) == 2
        assert first.metadata["count"] == len(json.loads(first.path().read_text()))


def test_unsupported_ops_are_all_named_and_nothing_is_cached(converter_site, tiny_mlp):
    with plugins_on_path(converter_site):
        with pytest.raises(UnsupportedOpsError) as info:
            hwdeploy.convert(tiny_mlp, "oplist", banned=["pd_op.relu", "pd_op.matmul"])
        assert info.value.ops == ["pd_op.matmul", "pd_op.relu"]
        cache = os.environ["HWDEPLOY_CACHE_DIR"]
        leftovers = [p for p in (os.path.join(cache, "convert", "oplist"),) if os.path.isdir(p) and os.listdir(p)]
        assert leftovers == []


def test_unknown_target_lists_known_ones(converter_site, tiny_mlp):
    with plugins_on_path(converter_site):
        with pytest.raises(ConversionError, match="unknown conversion target 'nb'.*oplist"):
            hwdeploy.convert(tiny_mlp, "nb")


def cli(*args, env=None, check_rc=None):
    full_env = dict(os.environ, COLUMNS="250", **(env or {}))
    out = subprocess.run([sys.executable, "-m", "hwdeploy", *args], capture_output=True, text=True, env=full_env,
                         timeout=300)
    if check_rc is not None:
        assert out.returncode == check_rc, out.stdout + out.stderr
    return out


def test_cli_run_writes_outputs_and_receipt(tmp_path, tiny_mlp):
    x = np.random.default_rng(0).standard_normal((3, 8)).astype("float32")
    np.save(tmp_path / "x.npy", x)
    out = cli("run", str(tiny_mlp), "--device", "cpu", "--input", str(tmp_path / "x.npy"), "--receipt",
              str(tmp_path / "r.json"), "--output", str(tmp_path / "o.npz"), "--json", "--repeat", "2", check_rc=0)
    result = json.loads(out.stdout)
    assert result["device"] == "cpu:0" and result["outputs"][0]["shape"] == [3, 4]
    receipt = json.loads((tmp_path / "r.json").read_text())
    assert receipt["actual"] == "cpu:0" and receipt["requested"] == "cpu"
    saved = np.load(tmp_path / "o.npz")
    expected = hwdeploy.predictor(tiny_mlp, device="cpu").run(x)[0]
    np.testing.assert_allclose(saved[list(saved.keys())[0]], expected, rtol=1e-6)


@pytest.mark.parametrize("args, message", [
    (["run", "/nonexistent/model", "--device", "cpu"], "ModelNotFoundError"),
    (["run", "{model}", "--device", "gpu:x"], "DeviceStringError"),
    (["run", "{model}", "--device", "tpu"], "DeviceNotFoundError"),
    (["run", "{model}", "--device", "cpu", "--input", "{bad}"], "InputError"),
    (["convert", "{model}", "--target", "no-such-target"], "unknown conversion target"),
])
def test_cli_errors_are_clear_and_exit_non_zero(tmp_path, tiny_mlp, args, message):
    np.save(tmp_path / "bad.npy", np.ones((3, 9), "float32"))
    args = [a.format(model=tiny_mlp, bad=tmp_path / "bad.npy") for a in args]
    out = cli(*args)
    assert out.returncode == 1 and message in out.stderr + out.stdout
    assert "Traceback" not in out.stderr


def test_cli_devices_and_usage():
    out = cli("devices", "--json", check_rc=0)
    assert any(d["id"] == "cpu:0" and d["available"] for d in json.loads(out.stdout))
    assert "cpu:0" in cli("devices", check_rc=0).stdout
    assert cli().returncode == 2
    assert cli("--version", check_rc=0).stdout.startswith("hwdeploy ")


def test_devices_does_not_import_paddle():
    code = "import sys, hwdeploy; hwdeploy.devices(); print(sorted(m for m in sys.modules if m.startswith('paddle')))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and out.stdout.strip() == "[]", out.stdout + out.stderr
