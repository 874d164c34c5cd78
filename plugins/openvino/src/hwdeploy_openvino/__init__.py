"""hwdeploy-openvino: Paddle models on OpenVINO's CPU plugin, as a hwdeploy plugin."""
