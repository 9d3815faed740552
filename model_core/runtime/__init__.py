"""Runtime: the ONNX Runtime beam search that serving and the export parity check share.

    ort_generator.py  OrtReportGenerator(export_dir).generate(images, contexts) → (texts, label_logits)
    decoding.py       the vectorised numpy pieces of the search (logits processors, stable top-k, positions)
    session.py        the export directory's config, providers and sessions; ExportError
"""
