"""Typed options: a string where a bool is expected, threads beyond a sane bound, an unknown precision are
OptionErrors naming the option and what is allowed, never a feature silently switched on."""

import pytest

import hwdeploy
from hwdeploy.builtin.cpu import OPTIONS as CPU_OPTIONS
from hwdeploy.sdk.options import MAX_THREADS, Option, OptionSchema


@pytest.mark.parametrize("options, message", [
    ({"onednn": "no"}, "'onednn' must be bool or None, got 'no'"),
    ({"optim_cache": "no"}, "'optim_cache' must be bool, got 'no'"),
    ({"check_finite": "no"}, "'check_finite' must be bool, got 'no'"),
    ({"ir_optim": 0}, "'ir_optim' must be bool, got 0"),
    ({"threads": 10**9}, f"'threads' must be in [1, {MAX_THREADS}]"),
    ({"threads": 0}, "'threads' must be in [1,"),
    ({"threads": True}, "'threads' must be int or None, got True"),
    ({"threads": 2.0}, "'threads' must be int or None"),
    ({"precision": "int4"}, "'precision' must be one of ['fp32', 'bf16', 'int8']"),
    ({"turbo": True}, "unknown option(s) ['turbo']"),
])
def test_bad_cpu_options_are_refused_with_what_is_allowed(tiny_mlp, options, message):
    with pytest.raises(hwdeploy.OptionError) as caught:
        hwdeploy.predictor(tiny_mlp, device="cpu", **options)
    assert message in str(caught.value) and str(caught.value).startswith("cpu backend:")


def test_good_options_and_defaults_pass(tiny_mlp):
    p = hwdeploy.predictor(tiny_mlp, device="cpu", threads=1, onednn=False, check_finite=False)
    assert p.check_finite is False and "onednn_enabled()=False" in " ".join(p.receipt().evidence)
    assert CPU_OPTIONS.check({}) == {o["name"]: o["default"] for o in CPU_OPTIONS.describe()}


def test_the_schema_describes_every_option_for_help_and_docs():
    rows = {row["name"]: row for row in CPU_OPTIONS.describe()}
    assert set(rows) == CPU_OPTIONS.names() and all(row["description"] for row in rows.values())
    assert rows["threads"]["range"] == [1, MAX_THREADS] and rows["precision"]["choices"] == ["fp32", "bf16", "int8"]


def test_an_option_may_take_several_types():
    schema = OptionSchema("acme", [Option("inputs", (list, tuple), None, "warm-up inputs")])
    assert schema.check({"inputs": (1, 2)}) == {"inputs": (1, 2)}
    with pytest.raises(hwdeploy.OptionError, match="must be list or tuple or None"):
        schema.check({"inputs": "x"})


def test_command_line_option_pairs_parse_json_values_or_text():
    from hwdeploy.sdk.options import parse_option_pairs

    assert parse_option_pairs(["threads=2", "shape=[1, 8]", "precision=fp16", "flag=true"]) == {
        "threads": 2, "shape": [1, 8], "precision": "fp16", "flag": True}
    for bad in ("threads", "=2"):
        with pytest.raises(hwdeploy.OptionError, match="KEY=VALUE"):
            parse_option_pairs([bad])


# ---------------------------------------------------------------- one schema per backend, docs and help from it
from pathlib import Path  # noqa: E402

from hwdeploy.sdk.testing import assert_options_documented, assert_refuses_wrong_options, wrong_values  # noqa: E402

DOCS = Path(__file__).resolve().parents[1] / "docs" / "options.md"


def _core_schemas():
    return [(owner, schema) for owner, schema in hwdeploy.option_schemas() if owner in ("hwdeploy", "cpu", "onnx")]


def test_the_core_declares_its_schemas_and_the_docs_are_generated_from_them():
    names = {schema.owner for _owner, schema in _core_schemas()}
    assert names == {"hwdeploy.predictor", "auto:fastest", "cpu backend", "paddle-int8 conversion", "onnx conversion"}
    assert_options_documented(_core_schemas(), DOCS)


def test_a_stale_docs_section_is_caught(tmp_path):
    stale = tmp_path / "options.md"
    stale.write_text(DOCS.read_text().replace("| `ir_optim` | bool | `True`", "| `ir_optim` | bool | `False`"))
    with pytest.raises(AssertionError, match="cpu backend"):
        assert_options_documented(_core_schemas(), stale)


def test_every_cpu_option_refuses_every_wrong_value_through_the_public_call(tiny_mlp):
    cases = assert_refuses_wrong_options(CPU_OPTIONS, lambda o: hwdeploy.predictor(tiny_mlp, device="cpu", **o))
    assert cases >= 40


def test_the_predictor_and_auto_fastest_options_refuse_wrong_values(tiny_mlp):
    from hwdeploy.api import PREDICTOR_OPTIONS
    from hwdeploy.fastest import OPTIONS as FASTEST

    assert assert_refuses_wrong_options(PREDICTOR_OPTIONS, lambda o: hwdeploy.predictor(tiny_mlp, "cpu", **o)) >= 8
    assert assert_refuses_wrong_options(FASTEST, lambda o: hwdeploy.predictor(tiny_mlp, "auto:fastest", **o)) >= 20


def test_onnx_conversion_options_refuse_wrong_values(tiny_mlp):
    from hwdeploy.builtin.onnx import OPTIONS as ONNX

    assert assert_refuses_wrong_options(ONNX, lambda o: hwdeploy.convert(tiny_mlp, "onnx", **o)) >= 6


def test_the_wrong_value_check_fails_on_a_backend_that_accepts_anything():
    lax = OptionSchema("lax backend", [Option("turbo", bool, False, "go faster", nullable=False)])
    assert wrong_values(lax.options["turbo"]) == ["no", 7, 2.5, [1], {"a": 1}, b"raw"]
    with pytest.raises(AssertionError, match="turbo='no' accepted"):
        assert_refuses_wrong_options(lax, lambda options: None)


def test_run_help_and_hwdeploy_options_come_from_the_schemas(capfd):
    import json

    from hwdeploy import cli

    with pytest.raises(SystemExit):
        cli.main(["run", "--help"])
    help_text = capfd.readouterr().out
    assert "cpu backend: calibration, check_finite, ir_optim, memory_optim, onednn," in help_text
    assert cli.main(["options", "cpu", "--json"]) == 0
    rows = json.loads(capfd.readouterr().out)
    assert [r["schema"] for r in rows] == ["cpu backend"]
    assert rows[0]["options"] == CPU_OPTIONS.describe()


def test_only_help_asks_the_plugins_for_their_schemas(monkeypatch):
    """Every command line builds the parser: the run epilog is computed when help is shown, not before."""
    from hwdeploy import cli

    calls = []
    monkeypatch.setattr(hwdeploy, "option_schemas", lambda: calls.append(1) or [])
    cli.build_parser()
    assert calls == []
    with pytest.raises(SystemExit):
        cli.main(["run", "--help"])
    assert calls == [1]


def test_run_passes_options_to_the_backend_and_refuses_a_wrong_one_before_running(capfd):
    from hwdeploy import cli

    import json

    assert cli.main(["run", "zoo:mlp", "--device", "cpu", "--repeat", "1", "--option", "threads=1", "--json"]) == 0
    assert json.loads(capfd.readouterr().out)["receipt"]["options"] == {"threads": 1}
    assert cli.main(["run", "zoo:mlp", "--device", "cpu", "--option", "onednn=no", "--json"]) == cli.EXIT_FAIL
    report = json.loads(capfd.readouterr().out)
    assert "'onednn' must be bool or None, got 'no'" in report["error"] and "outputs" not in report
