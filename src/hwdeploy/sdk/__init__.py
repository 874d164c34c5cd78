"""The plugin-author SDK: helpers a plugin may use, none of which it must.

- :mod:`.paddle_inference`: build a Paddle Inference config/predictor and its receipt (the CPU reference uses it)
- :mod:`.paddle_kernels`: which kernel ran each op (Paddle's kernel program, captured and parsed), for receipts
- :mod:`.paddle_format`: read PIR ``.json`` programs and ``.pdiparams`` without importing Paddle
- :mod:`.onnx_export`: Paddle -> ONNX (paddle2onnx in a child process), shared by every ONNX-consuming plugin
- :mod:`.isolation`: run a probe or a native call in a child process with a timeout, cached
- :mod:`.options`: check a plugin's options and raise :class:`hwdeploy.OptionError`
- :mod:`.hostinfo`: CPU name, memory, usable cores, installed versions (standard library only)
- :mod:`.cache`: hwdeploy's on-disk cache (``cache_dir``, ``build_once``)
- :mod:`.testing`: install a plugin through a real entry point in tests, parity metrics
"""
