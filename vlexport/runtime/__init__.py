"""The thin runtime: HF-style models on ONNX Runtime or TensorRT. numpy or DLPack in, no torch."""
