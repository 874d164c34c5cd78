"""hwdeploy plugin for Huawei Ascend NPUs (device kind ``npu``), through Paddle's CustomDevice."""
