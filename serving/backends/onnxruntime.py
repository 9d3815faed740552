"""ONNX Runtime over an export directory (`model_core.export`): the CPU default of the service.

The search is `model_core.runtime.ort_generator.OrtReportGenerator` as is — its vectorised processors, stable
partial top-k, in-place cache reorder and done-studies-leave-the-batch compaction are the runtime's own — so a
study's report is the one the export's parity check measured against torch.
"""

from __future__ import annotations

import os
import threading
from pathlib import Path

import numpy as np
import torch

from model_core.config import GenerationConfig
from model_core.runtime.ort_generator import OrtReportGenerator
from serving.backends.base import calibrated_probs, groups_by_views, study_embedding


class OrtBackend:
    """ONNX Runtime over an export directory (FP32 vision graph; FP32 or INT8 decoder)."""

    def __init__(self, export_dir: str | os.PathLike, detection: dict, gen: GenerationConfig | None = None,
                 precision: str = "fp32", threads: int | None = None, provider: str | None = "CPUExecutionProvider"):
        self.engine = OrtReportGenerator(export_dir, precision=precision, provider=provider, gen=gen,
                                         threads=threads)
        self.name = f"onnxruntime-{precision}"
        self.temperature = float(detection.get("temperature", 1.0))
        self.image_size = int(self.engine.meta["image_size"])
        self.export_dir = Path(export_dir)
        # The runtime's generate encodes the images itself and returns texts and label logits only; its
        # `encode_images` (a documented override point) is wrapped on this instance to keep the visual tokens of
        # the calling thread's batch for the study embedding, so the vision graph still runs once per batch.
        # Thread-local: the service's workers run batches on one engine at once.
        self._visual_tokens = threading.local()
        encode = self.engine.encode_images

        def encode_and_keep(batch_images):
            visual_tokens, label_logits = encode(batch_images)
            self._visual_tokens.last = visual_tokens
            return visual_tokens, label_logits

        self.engine.encode_images = encode_and_keep

    def generate(self, images: list[torch.Tensor], contexts: list[dict | None]) -> list[tuple[str, np.ndarray]]:
        return [(text, probs) for text, probs, _ in self._generate(images, contexts, embed=False)]

    def generate_with_embeddings(self, images: list[torch.Tensor], contexts: list[dict | None]
                                 ) -> list[tuple[str, np.ndarray, np.ndarray]]:
        """(text, probs (14,), study embedding (d_l,)) per study (see serving.backends.base)."""
        return self._generate(images, contexts, embed=True)

    def _generate(self, images: list[torch.Tensor], contexts: list[dict | None], embed: bool) -> list[tuple]:
        images = list(images)
        out: list[tuple | None] = [None] * len(images)
        for _, idx in groups_by_views(images).items():
            batch = np.stack([images[i].detach().cpu().numpy() for i in idx]).astype(np.float32)
            texts, logits = self.engine.generate(batch, [contexts[i] for i in idx])
            probs = calibrated_probs(logits, self.temperature)
            embeddings = study_embedding(self._visual_tokens.last) if embed else [None] * len(idx)
            for j, i in enumerate(idx):
                out[i] = (texts[j], probs[j], embeddings[j])
        return out

    def label_logits(self, images: np.ndarray) -> np.ndarray:
        return self.engine.encode_images(images)[1]
