"""Export descriptions (torch-free) and the build pipeline (torch, onnx: imported lazily)."""
