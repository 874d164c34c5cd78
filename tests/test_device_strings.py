"""Device-string parsing and device selection (no Paddle needed)."""

import pytest
from hypothesis import given
from hypothesis import strategies as st

from hwdeploy import Device, DeviceNotFoundError, DeviceSpec, DeviceStringError
from hwdeploy.selection import select_devices

kinds = st.from_regex(r"[a-z][a-z0-9_]{0,10}", fullmatch=True).filter(lambda k: k != "auto")


@pytest.mark.parametrize("text, expected", [
    ("auto", DeviceSpec("auto")), ("cpu", DeviceSpec("cpu")), ("gpu", DeviceSpec("gpu")),
    ("gpu:1", DeviceSpec("gpu", 1)), ("npu:0", DeviceSpec("npu", 0)), ("mlu:0", DeviceSpec("mlu", 0)),
    ("arm", DeviceSpec("arm")), ("webgl", DeviceSpec("webgl")), (" GPU:2 ", DeviceSpec("gpu", 2)),
    ("auto:fastest", DeviceSpec("auto", mode="fastest")),
])
def test_known_forms_parse(text, expected):
    assert DeviceSpec.parse(text) == expected


@pytest.mark.parametrize("text", ["", ":", "gpu:", "gpu:x", "gpu:-1", "gpu:1:2", "1gpu", "g pu", "gpu:1.5",
                                  "auto:slowest", "cpu:9999999", "cpu:²", "npu:٣", None, 3])
def test_malformed_strings_raise_a_clear_error(text):
    with pytest.raises(DeviceStringError) as info:
        DeviceSpec.parse(text)
    assert "device" in str(info.value)


@given(kind=kinds, index=st.none() | st.integers(0, 99999))
def test_round_trip(kind, index):
    spec = DeviceSpec(kind, index)
    assert DeviceSpec.parse(str(spec)) == spec


@given(st.text(max_size=20))
def test_arbitrary_text_either_parses_or_raises_device_string_error(text):
    try:
        spec = DeviceSpec.parse(text)
    except DeviceStringError:
        return
    assert DeviceSpec.parse(str(spec)) == spec


FOUND = [
    Device("gpu", 0, backend="tensorrt", available=False, reason="no NVIDIA driver", plugin="nvidia", priority=100),
    Device("npu", 0, backend="custom", priority=90, plugin="ascend"),
    Device("npu", 1, backend="custom", priority=90, plugin="ascend"),
    Device("cpu", 0, backend="paddle-inference", plugin="cpu"),
    Device("webgl", 0, backend="paddlejs", priority=-10, plugin="webgl"),
]


def test_auto_orders_by_priority_and_never_picks_negative_priority():
    chosen = select_devices(DeviceSpec("auto"), sorted(FOUND, key=lambda d: -d.priority))
    assert [d.id for d in chosen] == ["npu:0", "npu:1", "cpu:0"]


def test_kind_without_index_takes_first_available():
    assert select_devices(DeviceSpec.parse("npu"), FOUND)[0].id == "npu:0"
    assert select_devices(DeviceSpec.parse("npu:1"), FOUND)[0].id == "npu:1"


def test_absent_kind_error_says_why_and_lists_available():
    with pytest.raises(DeviceNotFoundError) as info:
        select_devices(DeviceSpec.parse("gpu"), FOUND)
    message = str(info.value)
    assert "no NVIDIA driver" in message and "cpu:0" in message and "npu:0" in message


def test_unknown_kind_lists_known_kinds():
    with pytest.raises(DeviceNotFoundError) as info:
        select_devices(DeviceSpec.parse("tpu:0"), FOUND)
    assert "tpu" in str(info.value) and "npu" in str(info.value) and "webgl" in str(info.value)


def test_missing_index_names_existing_ones():
    with pytest.raises(DeviceNotFoundError) as info:
        select_devices(DeviceSpec.parse("npu:7"), FOUND)
    assert "npu:0" in str(info.value)


def test_backend_filter():
    assert select_devices(DeviceSpec.parse("cpu"), FOUND, backend="paddle-inference")[0].plugin == "cpu"
    with pytest.raises(DeviceNotFoundError):
        select_devices(DeviceSpec.parse("cpu"), FOUND, backend="onnxruntime")
