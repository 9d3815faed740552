"""Export: ONNX graphs, INT8 quantization, TensorRT and parity checks (the pipeline's export step).

    step.py      export_onnx(model_dir, out_dir, data_cfg=...): the whole step, staged and published atomically
    graphs.py    the exportable wrappers and the exporters (vision.onnx, decoder.onnx)
    quantize.py  the INT8 decoder (static with calibration studies, else dynamic)
    tensorrt.py  TensorRT engines where tensorrt imports
    parity.py    torch vs ONNX Runtime parity and latency (check_parity, compare_engine_latency)
    sources.py   the model directory and the studies the export reads

The generator that runs an export is `model_core.runtime.ort_generator.OrtReportGenerator`.
"""
