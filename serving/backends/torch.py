"""The reference backend: `model_core.modeling.generation.generate_texts` on the torch model (CPU)."""

from __future__ import annotations

import numpy as np
import torch

from model_core.config import GenerationConfig
from model_core.modeling.generation import generate_texts
from serving.backends.base import calibrated_probs, groups_by_views, study_embedding


class TorchBackend:
    """model_core.modeling.generation on the torch model (CPU)."""

    name = "torch"

    def __init__(self, model, detection: dict, gen: GenerationConfig):
        self.model = model.float().eval()
        self.temperature = float(detection.get("temperature", 1.0))
        self.gen = gen
        self.image_size = int(model.image_size)

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
            batch = torch.stack([images[i] for i in idx]).float()
            with torch.inference_mode():
                features = self.model.encode_images(batch)
                texts, logits = generate_texts(self.model, None, [contexts[i] for i in idx], self.gen,
                                               vision_features=features)
                embeddings = (study_embedding(self.model.project_visual_tokens(features).float().numpy())
                              if embed else [None] * len(idx))
            probs = calibrated_probs(logits.float().numpy(), self.temperature)
            for j, i in enumerate(idx):
                out[i] = (texts[j], probs[j], embeddings[j])
        return out
