"""hwdeploy-onnxruntime: Paddle models on ONNX Runtime (via paddle2onnx), as a hwdeploy plugin."""
