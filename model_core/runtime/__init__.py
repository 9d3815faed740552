"""Runtime: the ONNX Runtime beam search that serving and the export parity check share."""
