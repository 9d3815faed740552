"""Training examples, one per study: tokens, labels, and the study's view slots as pixels or encoder features.

    examples = build_examples(model, dataset, cfg)       tokenised prompt + report, 0/1 finding labels, view slots
    examples.pixels(model)                               (S, V, 1, H, W), NaN for missing views (decoded once)
    examples.features(model, cache_root, batch)          (S, V, 1 + N, d_v) frozen-encoder features, NaN rows for
                                                         missing views; through the on-disk FeatureCache when given
    study_view_features(model, dataset, cache_root)      the same for any loaded dataset, with its study targets

A study's views fill the model's slots as `model_core.data.iu_xray.view_slots` says (1 slot: its frontal image, or
its lateral one without a frontal; 2 slots: frontal, lateral), the same rule evaluation and export use.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field

import numpy as np
import torch
from tqdm.auto import tqdm

from model_core.chexpert import binarize
from model_core.config import TrainConfig, resolve_path
from model_core.data.images import load_images, missing_view
from model_core.data.iu_xray import group_studies, view_slots
from model_core.modeling.feature_cache import encode_image_files, model_feature_cache, study_features
from model_core.modeling.hints import names_of
from model_core.modeling.model import RadiologyMultimodalModel
from model_core.modeling.tokenizer import build_prompt, clean_target, encode_example

log = logging.getLogger(__name__)


@dataclass
class Examples:
    """Tokenised training examples of one split, one per study, aligned with its view slots."""
    input_ids: list[list[int]]
    labels: list[list[int]]
    report_ids: list[list[int]]        # <bos> report <eos>, for the text-only LM stage
    finding_labels: torch.Tensor       # (S, 14) in {0, 1}
    slots: list[list[int | None]]      # per study, per view slot: a row of the dataset's images, or None
    image_paths: list[str]             # the dataset's image paths (slots index into them)
    study_ids: list[str] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.input_ids)

    def used_rows(self) -> list[int]:
        return sorted({row for study in self.slots for row in study if row is not None})

    def pixels(self, model: RadiologyMultimodalModel, desc: str = "images") -> torch.Tensor:
        """(S, V, 1, H, W) in [0, 1], NaN for missing views; each image decoded once."""
        rows = self.used_rows()
        decoded = dict(zip(rows, load_images([self.image_paths[r] for r in rows], model.image_size, desc)))
        blank = missing_view(model.image_size)
        return torch.stack([torch.stack([decoded[r] if r is not None else blank for r in study])
                            for study in self.slots])

    def features(self, model: RadiologyMultimodalModel, cache_root: str | None, batch_size: int) -> torch.Tensor:
        """(S, V, 1 + N, d_v) encoder features of the studies' views (NaN rows for missing views): through the
        on-disk cache under cache_root (a frozen encoder), or computed here (cache_root None)."""
        return slot_features(model, self.image_paths, self.slots, cache_root, batch_size)


def slot_features(model: RadiologyMultimodalModel, image_paths: list[str], slots: list[list[int | None]],
                  cache_root: str | None, batch_size: int) -> torch.Tensor:
    """Encoder features of view slots (rows of image_paths, None = missing) → (S, V, 1 + N, d_v)."""
    rows = sorted({row for study in slots for row in study if row is not None})
    cache = model_feature_cache(model, resolve_path(cache_root)) if cache_root else None
    started = time.perf_counter()
    feats = encode_image_files(model, [image_paths[r] for r in rows], cache, batch_size)
    if cache is not None:
        log.info("encoder features of %d images: %d from the cache, %d encoded (%.0f s)", len(rows), cache.hits,
                 cache.misses, time.perf_counter() - started)
    index = {row: i for i, row in enumerate(rows)}
    return study_features(feats, [[index[r] if r is not None else None for r in study] for study in slots])


def study_view_features(model: RadiologyMultimodalModel, dataset: dict, cache_root: str | None = None,
                        batch_size: int = 32) -> tuple[list[str], np.ndarray, torch.Tensor]:
    """Per study of a loaded dataset: (study_ids, 0/1 targets (S, 14) (U-Ones), features (S, V, 1 + N, d_v)),
    the view slots filled as in training. cache_root: the on-disk feature cache (a frozen encoder only)."""
    studies = group_studies(dataset)
    slots = [view_slots(s, model.num_views) for s in studies]
    cache_root = cache_root if model.config.vision.freeze else None   # only a frozen encoder's features are stable
    feats = slot_features(model, list(dataset["images"]), slots, cache_root, batch_size)
    return [s["study_id"] for s in studies], binarize(np.stack([s["labels"] for s in studies])), feats


def build_examples(model: RadiologyMultimodalModel, dataset: dict, cfg: TrainConfig) -> Examples:
    tok = model.tokenizer
    input_ids, labels, report_ids, targets, slots, ids = [], [], [], [], [], []
    for study in group_studies(dataset):
        report = clean_target(study["report"])
        # the findings hint states the study's own labels in training (the head's at generation)
        findings = (names_of(binarize(np.asarray(study["labels"])[None], cfg.uncertain_policy)[0])
                    if model.config.findings_hint else None)
        prompt_ids, lab = encode_example(tok, build_prompt(study["metadata"], findings=findings), report,
                                         model.image_tokens_per_study, cfg.max_report_tokens)
        input_ids.append(prompt_ids)
        labels.append(lab)
        report_tokens = tok.encode(" " + report, add_special_tokens=False)[:cfg.max_report_tokens]
        report_ids.append([tok.bos_token_id] + report_tokens + [tok.eos_token_id])
        targets.append(study["labels"])
        slots.append(view_slots(study, model.num_views))
        ids.append(study["study_id"])
    finding = torch.from_numpy(binarize(np.stack(targets), cfg.uncertain_policy)).float()
    return Examples(input_ids, labels, report_ids, finding, slots, list(dataset["images"]), ids)


@torch.no_grad()
def features_from_pixels(model: RadiologyMultimodalModel, pixels: torch.Tensor, batch_size: int,
                         device: torch.device | str = "cpu") -> torch.Tensor:
    """Frozen-encoder features of pixel slots (S, V, 1, H, W) → (S, V, 1 + N, d_v), in host memory (an encoder
    trained in this run has no stable weights to key a disk cache by). device: where the model lives."""
    model.encoder.eval()
    out = [model.encode_images(pixels[i:i + batch_size].to(device)).cpu() for i in
           tqdm(range(0, len(pixels), batch_size), desc="cache encoder features", leave=False, disable=None)]
    return torch.cat(out)
