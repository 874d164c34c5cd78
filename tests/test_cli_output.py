"""What a person or a script sees from the command line: pure JSON, one refusal with a way out, tables that fit,
help for every option, and a library that stays quiet."""

import json
import os
import subprocess
import sys

import pytest

from hwdeploy.selection import offered_plugins


def hwdeploy_cli(*args, columns=None, env_extra=None, timeout=300):
    env = dict(os.environ, **(env_extra or {}))
    env.pop("COLUMNS", None)
    if columns:
        env["COLUMNS"] = str(columns)
    return subprocess.run([sys.executable, "-m", "hwdeploy", *args], capture_output=True, text=True, env=env,
                          timeout=timeout)


def test_run_json_is_pure_json_for_every_zoo_model():
    # The transformer encoder makes Paddle print "ReduceMeanCheckIfOneDNNSupport" on stdout (std::cout).
    out = hwdeploy_cli("run", "--device", "cpu", "--json", "--repeat", "1")
    assert out.returncode == 0, out.stderr
    results = json.loads(out.stdout)
    assert {r["model"] for r in results} >= {"zoo:transformer_encoder", "zoo:mlp"}
    assert all(r["device"] == "cpu:0" for r in results)
    assert "ReduceMeanCheckIfOneDNNSupport" in out.stderr  # moved, not lost


def test_native_output_does_not_cross_the_table():
    out = hwdeploy_cli("run", "zoo:transformer_encoder", "--device", "cpu", "--repeat", "1")
    assert out.returncode == 0, out.stderr
    assert "ReduceMeanCheckIfOneDNNSupport" not in out.stdout
    assert "native runtime output hidden; -v shows them" in out.stderr
    verbose = hwdeploy_cli("-v", "run", "zoo:transformer_encoder", "--device", "cpu", "--repeat", "1")
    assert "ReduceMeanCheckIfOneDNNSupport" in verbose.stderr


def test_a_missing_kind_is_refused_once_with_the_package_that_provides_it():
    offered = offered_plugins()
    if not offered:
        pytest.skip("every plugin package this distribution offers is installed here (the core tox env has none)")
    kind = sorted(offered)[0]
    out = hwdeploy_cli("run", "--device", kind)
    assert out.returncode == 1
    assert out.stderr.count("no installed plugin provides kind") == 1  # once, not once per zoo model
    assert f"pip install 'hwdeploy[{kind}]'" in out.stderr.replace("\n", "")
    devices = hwdeploy_cli("devices", columns=250)
    assert f"  {kind}: pip install 'hwdeploy[{kind}]'" in devices.stdout.splitlines()


@pytest.mark.parametrize("columns", [80, 120])
def test_device_table_fits_the_terminal_and_keeps_names_whole(columns):
    out = hwdeploy_cli("devices", columns=columns)
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert max(len(line) for line in lines) <= columns
    assert any("paddle-inference" in line for line in lines) and any("cpu:0" in line for line in lines)
    assert ("memory" in lines[2]) == (columns >= 120)  # the header: optional columns only where they fit


def test_plain_output_without_a_terminal_does_not_wrap_names():
    out = hwdeploy_cli("devices")  # a pipe, no $COLUMNS
    assert "paddle-inference" in out.stdout and "paddle-inf\n" not in out.stdout


def test_zoo_list_shows_readable_inputs():
    out = hwdeploy_cli("zoo", "list", columns=200)
    assert "ZooInput(" not in out.stdout and "x: float32 N×64" in out.stdout and "tokens: int64 N×?" in out.stdout


@pytest.mark.parametrize("command", [["run"], ["convert"], ["devices"], ["plugins"], ["zoo", "export"]])
def test_every_option_has_help_and_its_default(command):
    from hwdeploy.cli import build_parser

    parser, _ = build_parser()
    sub = parser._subparsers._group_actions[0].choices[command[0]]
    if len(command) > 1:
        sub = sub._subparsers._group_actions[0].choices[command[1]]
    for action in sub._actions:
        if action.dest == "help":
            continue
        assert action.help, f"{command} {action.option_strings or action.dest} has no help"
    text = sub.format_help()
    if command == ["run"]:
        assert "(default: auto)" in text and "(default: error)" in text


def test_the_library_is_quiet_unless_asked():
    code = ("import hwdeploy\nfrom hwdeploy import zoo\n"
            "p = hwdeploy.predictor('zoo:mlp', device='auto')\np.run(*zoo.sample_inputs('mlp'))\n"
            "import paddle\np = hwdeploy.predictor('zoo:mlp', device='cpu')\np.run(*zoo.sample_inputs('mlp'))\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    assert "hwdeploy" not in out.stderr and "INFO" not in out.stderr, out.stderr
    # ...and says where it ran when asked, at DEBUG
    asked = subprocess.run([sys.executable, "-c", "import logging; logging.basicConfig(level=logging.DEBUG)\n" + code],
                           capture_output=True, text=True, timeout=300)
    assert "hwdeploy auto: chose cpu:0" in asked.stderr


def test_unwritable_outputs_are_refused_before_the_model_runs(tmp_path):
    for option in ("--receipt", "--output"):
        out = hwdeploy_cli("run", "zoo:mlp", "--device", "cpu", option, str(tmp_path / "missing" / "x.json"))
        assert out.returncode == 1 and "does not exist" in out.stderr and "Traceback" not in out.stderr
        assert "create" not in out.stdout  # no results table: nothing ran
    (tmp_path / "file.txt").write_text("x")  # DEST is an existing file
    out = hwdeploy_cli("zoo", "export", "mlp", str(tmp_path / "file.txt"))
    assert out.returncode == 1 and "not a directory" in out.stderr and "Traceback" not in out.stderr


def test_a_fifo_input_is_refused_instead_of_blocking(tmp_path):
    fifo = tmp_path / "inputs.npy"
    os.mkfifo(fifo)
    out = hwdeploy_cli("run", "zoo:mlp", "--device", "cpu", "--input", str(fifo), timeout=120)
    assert out.returncode == 1 and "not a regular file" in out.stderr
