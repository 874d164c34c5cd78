"""hwdeploy plugin for Cambricon MLUs (device kind ``mlu``), through Paddle's CustomDevice."""
