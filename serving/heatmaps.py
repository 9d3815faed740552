"""Per-finding heatmaps of a generated report (no HTTP types): GET /api/v1/reports/{report_id}/heatmaps/{finding}.

What a report keeps for them: the model inputs of its views — the (K, 1, H, W) images in [0, 1] the model saw,
after the one preprocessing path (DICOM windowing, resize), as 8-bit grey PNGs — in the report record
(`HEATMAP_INPUTS`), nothing else. They are kept exactly as long as the report: the same row of the report store,
under its retention (30 days by default) and file permissions (owner only), deleted with it; no header, no
identifier, never logged. The map is computed when asked (`HeatmapRenderer.render`): Grad-CAM-style saliency of the
detection head (`model_core.modeling.explain`) on those inputs, drawn over them, one panel per view. 8-bit storage
rounds each pixel by at most 1/510, so the probability printed with the map can differ from the report's in the
third decimal; the report's confidence stays the reference.

The renderer loads its OWN torch copy of the served model (from the model directory every backend has), lazily on
the first request: the map hooks the encoder, which must never happen on the model the batcher is running, and
the default ONNX backend has no torch model at all. Requests are served one at a time (CPU; one encoder forward and
backward per view).
"""

from __future__ import annotations

import base64
import io
import threading
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from model_core.chexpert import CHEXPERT_LABELS
from model_core.modeling.explain import ExplainError, finding_heatmap, overlay_png
from model_core.modeling.model_dir import load_model_dir
from serving.errors import NotFound

HEATMAP_INPUTS = "heatmap_inputs"     # the report record's key: one base64 PNG per view
FINDINGS = {label.lower().replace(" ", "-"): label for label in CHEXPERT_LABELS if label != "No Finding"}


def encode_inputs(images: torch.Tensor) -> list[str]:
    """(K, 1, H, W) model inputs in [0, 1] → one base64 8-bit grey PNG per present view (for the report record);
    a missing view slot (all NaN) is skipped: heatmaps are drawn per view (`finding_heatmap`)."""
    out = []
    for view in images.detach().float().reshape(-1, *images.shape[-2:]):
        if torch.isnan(view).all():
            continue
        buffer = io.BytesIO()
        Image.fromarray(np.round(view.clamp(0, 1).numpy() * 255).astype(np.uint8), mode="L").save(buffer, "PNG")
        out.append(base64.b64encode(buffer.getvalue()).decode("ascii"))
    return out


def decode_inputs(encoded: list[str]) -> torch.Tensor:
    """The inverse of `encode_inputs`: (K, 1, H, W) float32 in [0, 1]."""
    views = [np.asarray(Image.open(io.BytesIO(base64.b64decode(item))).convert("L"), dtype=np.float32) / 255.0
             for item in encoded]
    return torch.from_numpy(np.stack(views))[:, None]


def finding_label(name: str) -> str:
    """A finding in a URL ("pleural-effusion", "Pleural Effusion", "pleural_effusion") → its CheXpert label."""
    label = FINDINGS.get(name.strip().lower().replace("_", "-").replace(" ", "-"))
    if label is None:
        raise NotFound(f"unknown finding; use one of {', '.join(FINDINGS)}")
    return label


class HeatmapRenderer:
    def __init__(self, model_dir: str | Path, size: int = 256):
        self.model_dir, self.size = Path(model_dir), size
        self._model = None
        self._temperature = 1.0
        self._lock = threading.Lock()

    def _loaded(self):
        if self._model is None:
            model, detection, _ = load_model_dir(self.model_dir)
            self._model, self._temperature = model.float().eval(), float(detection.get("temperature", 1.0))
        return self._model

    def render(self, record: dict, finding: str) -> bytes:
        """PNG bytes of the finding's heatmap over each view of the report (blocking: call it in a thread)."""
        label = finding_label(finding)
        encoded = record.get(HEATMAP_INPUTS)
        if not encoded:
            raise NotFound("this report kept no model inputs, so no heatmap can be drawn (reports made before "
                           "heatmaps existed, or by a service configured not to keep them)")
        images = decode_inputs(encoded)
        with self._lock:
            model = self._loaded()
            try:
                heat = finding_heatmap(model, images, label, self._temperature)
            except ExplainError as exc:
                raise NotFound(f"no heatmap for this report: {exc}") from None
        return overlay_png(images[:, 0].numpy(), heat, size=self.size)
