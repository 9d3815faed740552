"""Export: ONNX graphs, INT8 quantization, TensorRT and parity checks (the pipeline's export step)."""
