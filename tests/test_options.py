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
    ({"precision": "int4"}, "'precision' must be one of ['fp32']"),
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
    assert rows["threads"]["range"] == [1, MAX_THREADS] and rows["precision"]["choices"] == ["fp32"]


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
