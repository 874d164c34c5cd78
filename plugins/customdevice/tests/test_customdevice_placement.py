"""Per-op placement from a CustomDevice's kernel program: each host op gets its reason (no Paddle needed).

The kernel program is the text Paddle prints (parsed by hwdeploy.sdk.paddle_kernels, tested on a real
CPU predictor in the core's tests); here, how the family classifies it for a device type.
"""

from __future__ import annotations

from hwdeploy.contract.receipt import CARRIED_PLACEMENT, FORCED_OFF, NO_KERNEL
from hwdeploy.sdk.paddle_kernels import KernelRecord, parse_kernel_program

from hwdeploy_customdevice import Placement, black_list, classify, device_kernels, visible_device_ids

# A kernel-program excerpt as Paddle 3.3.1 prints it (VLOG(2) of pir_interpreter), abridged.
DUMP = """\
======================== The network executed by pir interpreter ========================
{
    (%0) = "builtin.parameter" () {parameter_name:"linear_1.b_0",persistable:[true]} : () -> custom_device_tensor<4xf32>
    (%4) = "data(phi_kernel)" () {dtype:float32,kernel_key:<backend:Undefined|layout:Undefined(AnyLayout)|dtype:float32>,kernel_name:"data",name:"x",op_name:"pd_op.data"} : () -> custom_device_tensor<-1x8xf32>
    (%5) = "matmul(phi_kernel)" (%4, %3) {kernel_key:<backend:npu|layout:NCHW|dtype:float32>,kernel_name:"matmul",op_name:"pd_op.matmul",transpose_x:false,transpose_y:false} : (custom_device_tensor<-1x8xf32>, custom_device_tensor<8x16xf32>) -> custom_device_tensor<-1x16xf32>
    (%6) = "batch_norm_(phi_kernel)" (%5) {is_inplace:true,kernel_key:<backend:CPU|layout:NCHW|dtype:float32>,kernel_name:"batch_norm",op_name:"pd_op.batch_norm_"} : (cpu_tensor<-1x16xf32>) -> cpu_tensor<-1x16xf32>
    (%7) = "relu_(phi_kernel)" (%6) {is_inplace:true,kernel_key:<backend:CPU|layout:NCHW|dtype:float32>,kernel_name:"relu",op_name:"pd_op.relu_"} : (cpu_tensor<-1x16xf32>) -> cpu_tensor<-1x16xf32>
    (%8) = "memcpy_h2d(phi_kernel)" (%7) {dst_place_type:1,kernel_key:<backend:CUSTOM|layout:NCHW|dtype:float32>,kernel_name:"memcpy_h2d",op_name:"pd_op.memcpy_h2d"} : (cpu_tensor<-1x16xf32>) -> custom_device_tensor<-1x16xf32>
    (%9) = "softmax_(phi_kernel)" (%8) {axis:-1,is_inplace:true,kernel_key:<backend:ONEDNN|layout:ONEDNN|dtype:float32>,kernel_name:"softmax",op_name:"pd_op.softmax_"} : (cpu_tensor<-1x4xf32>) -> cpu_tensor<-1x4xf32>
    (%10) = "reshape(phi_kernel)" (%9) {kernel_key:<backend:CUSTOM|layout:NCHW|dtype:float32>,kernel_name:"reshape",op_name:"pd_op.reshape"} : (custom_device_tensor<-1x4xf32>) -> custom_device_tensor<-1x4xf32>
    () = "builtin.shadow_output" (%9) {output_name:"fetch_name_0"} : (cpu_tensor<-1x4xf32>) ->
}
"""


def test_kernel_program_is_classified_per_op():
    records = parse_kernel_program(DUMP)
    assert [(r.kernel, r.backend) for r in records] == [
        ("data", "Undefined"), ("matmul", "npu"), ("batch_norm", "CPU"), ("relu", "CPU"), ("memcpy_h2d", "CUSTOM"),
        ("softmax", "ONEDNN"), ("reshape", "CUSTOM")]
    kernels = {"matmul": {"float32"}, "relu": {"float32"}, "reshape": {"float32"}}  # as the inventory says
    placement = classify(records, "npu", "npu:0", kernels, blocked={"softmax"})
    assert [(op.op, op.device, op.count, op.reason) for op in placement.ops] == [
        ("batch_norm", "cpu:0", 1, NO_KERNEL), ("matmul", "npu:0", 1, ""),
        ("relu", "cpu:0", 1, CARRIED_PLACEMENT), ("reshape", "npu:0", 1, ""),
        ("softmax", "cpu:0", 1, FORCED_OFF)]
    assert placement.transfers == {"memcpy_h2d": 1} and placement.actual == "npu:0"
    assert placement.off_device() == {"batch_norm": 1, "relu": 1, "softmax": 1}
    assert any("CUSTOM_DEVICE_BLACK_LIST=softmax" in e for e in placement.evidence)
    assert Placement.from_dict(placement.to_dict()) == placement  # crosses the process boundary intact


def test_a_kernel_of_the_wrong_dtype_is_a_missing_kernel():
    records = [KernelRecord("pd_op.relu", "relu", "CPU", "float16")]
    placement = classify(records, "npu", "npu:0", {"relu": {"float32"}}, blocked=set())
    assert [(op.op, op.reason) for op in placement.ops] == [("relu", NO_KERNEL)]


def test_nothing_on_the_device_means_the_program_runs_on_the_cpu():
    records = [KernelRecord("pd_op.matmul", "matmul", "CPU", "float32"),
               KernelRecord("pd_op.add", "add", "ONEDNN", "float32")]
    placement = classify(records, "mlu", "mlu:0", {"matmul": {"float32"}}, blocked=set())
    assert placement.on_device == 0 and placement.actual == "cpu:0"
    assert Placement("mlu:0", known=False).actual == "mlu:0"  # unknown placement: never claims a fallback


def test_another_backend_is_neither_the_device_nor_the_host():
    placement = classify([KernelRecord("pd_op.relu", "relu", "GPU", "float32")], "npu", "npu:0", {}, blocked=set())
    assert [(op.device, op.reason) for op in placement.ops] == [("gpu", "kernel backend GPU")]


def test_device_kernels_are_its_own_plus_paddles_generic_ones():
    inventory = {"relu": [("npu", "NCHW", "float32"), ("CPU", "NCHW", "float64")],
                 "reshape": [("CUSTOM", "ALL_LAYOUT", "float32")], "softmax": [("CPU", "NCHW", "float32")],
                 "conv2d": [("mlu", "NCHW", "float32")]}
    assert device_kernels("npu", inventory) == {"relu": {"float32"}, "reshape": {"float32"}}


def test_black_list_and_visible_ids_read_the_environment(monkeypatch):
    monkeypatch.setenv("CUSTOM_DEVICE_BLACK_LIST", " relu, ,matmul")
    assert black_list() == {"relu", "matmul"}
    monkeypatch.setenv("TOPS_VISIBLE_DEVICES", "3,1,x,2")
    assert visible_device_ids("TOPS_VISIBLE_DEVICES", 3) == [3, 1, None]  # stops at the first invalid entry
    monkeypatch.delenv("TOPS_VISIBLE_DEVICES")
    assert visible_device_ids("TOPS_VISIBLE_DEVICES", 2) == [0, 1]
