"""The Ascend plugin without its device: discovery says why, errors instead of aborts, the vendor tool, Lite.

The tests are the shared CustomDevice plugin suite (``PluginSuite`` in simdevice/simdevice_plugin_suite.py),
run for this plugin as conftest.py's ``vendor`` describes it, plus the Ascend-only ones below. The hardware
test (``-m ascend``) runs in a lab with a real Ascend NPU; here it skips with the reason.
"""

from __future__ import annotations

import pytest
import simdevice_plugin_suite as suite

from hwdeploy import custom_device
from hwdeploy.contract.receipt import CARRIED_PLACEMENT, FORCED_OFF, NO_KERNEL


class TestAscendPlugin(suite.PluginSuite):
    @pytest.mark.ascend
    def test_ascend_hardware_zoo_parity_and_receipts(self, vendor):
        self.check_hardware_zoo_parity_and_receipts(vendor)


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


def test_ascend_kernel_program_is_classified_per_op():
    records = custom_device.parse_kernel_program(DUMP)
    assert [(r.kernel, r.backend) for r in records] == [
        ("data", "Undefined"), ("matmul", "npu"), ("batch_norm", "CPU"), ("relu", "CPU"), ("memcpy_h2d", "CUSTOM"),
        ("softmax", "ONEDNN"), ("reshape", "CUSTOM")]
    kernels = {"matmul": {"float32"}, "relu": {"float32"}, "reshape": {"float32"}}  # as the inventory says
    placement = custom_device.classify(records, "npu", "npu:0", kernels, blocked={"softmax"})
    assert [(op.op, op.device, op.count, op.reason) for op in placement.ops] == [
        ("batch_norm", "cpu:0", 1, NO_KERNEL), ("matmul", "npu:0", 1, ""),
        ("relu", "cpu:0", 1, CARRIED_PLACEMENT), ("reshape", "npu:0", 1, ""),
        ("softmax", "cpu:0", 1, FORCED_OFF)]
    assert placement.transfers == {"memcpy_h2d": 1} and placement.actual == "npu:0"
    assert custom_device.parse_kernel_program("no dump here") is None  # the dump was not printed at all
