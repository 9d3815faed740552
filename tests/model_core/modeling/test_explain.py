"""Per-finding heatmaps (patch-token gradient saliency): the map points where the evidence is.

The smoke model (32-px images, 8-px patches: a 4×4 grid) is trained in the test on synthetic images where a bright
blob means "Pleural Effusion"; occluding the patch the map highlights must lower the finding's probability more
than occluding a random other patch. Both encoder families are covered (the from-scratch ViT and DINOv2).
"""

import io

import numpy as np
import pytest
import torch
from PIL import Image
from tiny_models import tiny_dinov2_config, tiny_model_config

from model_core.modeling.explain import ExplainError, finding_heatmap, overlay_png, overlay_rgb
from model_core.modeling.model import RadiologyMultimodalModel
from model_core.modeling.tokenizer import train_report_tokenizer

FINDING = "Pleural Effusion"
SIDE, PATCH, BLOB = 32, 8, 5
BACKGROUND = 0.3


def synthetic_blobs(n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor, np.ndarray]:
    """(n, 1, 32, 32) noisy grey images, half with a bright 5×5 blob inside one random 8×8 patch; labels (n,)
    and the blob's patch (row, column) per image (-1 without a blob)."""
    rng = np.random.default_rng(seed)
    images = np.clip(rng.normal(BACKGROUND, 0.05, size=(n, 1, SIDE, SIDE)), 0, 1).astype(np.float32)
    labels = np.zeros(n, dtype=np.float32)
    where = np.full((n, 2), -1)
    for i in range(0, n, 2):
        row, col = rng.integers(0, SIDE // PATCH, size=2)
        dy, dx = rng.integers(0, PATCH - BLOB + 1, size=2)
        y, x = row * PATCH + dy, col * PATCH + dx
        images[i, 0, y:y + BLOB, x:x + BLOB] = 0.95
        labels[i], where[i] = 1.0, (row, col)
    return torch.from_numpy(images), torch.from_numpy(labels), where


def occlude(images: torch.Tensor, patches: np.ndarray) -> torch.Tensor:
    out = images.clone()
    for i, (row, col) in enumerate(patches):
        out[i, :, row * PATCH:(row + 1) * PATCH, col * PATCH:(col + 1) * PATCH] = BACKGROUND
    return out


def train_blob_detector(config) -> RadiologyMultimodalModel:
    """A smoke model whose encoder and detection head learn 'blob → Pleural Effusion' (seeded; 40 steps)."""
    torch.manual_seed(0)
    tokenizer = train_report_tokenizer(["no acute cardiopulmonary abnormality", "small left pleural effusion"] * 4,
                                       vocab_size=300)
    model = RadiologyMultimodalModel(config, tokenizer)
    model.encoder.requires_grad_(True).train()   # the test trains the encoder too (DINOv2 is frozen by default)
    k = 10   # Pleural Effusion
    images, labels, _ = synthetic_blobs(128, seed=1)
    params = list(model.encoder.parameters()) + list(model.detection_head.parameters())
    optimiser = torch.optim.Adam(params, lr=3e-3)
    generator = torch.Generator().manual_seed(2)
    for _ in range(40):
        batch = torch.randint(0, len(images), (32,), generator=generator)
        logits = model.detect(model.encode_views(images[batch])[:, None])[:, k]
        loss = torch.nn.functional.binary_cross_entropy_with_logits(logits, labels[batch])
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
    return model.eval()


@pytest.fixture(scope="module", params=["vit", "dinov2"])
def blob_model(request):
    config = tiny_model_config() if request.param == "vit" else tiny_dinov2_config()
    config.vision.freeze = False
    return train_blob_detector(config)


def test_occluding_the_highlighted_patch_lowers_the_probability_more_than_a_random_patch(blob_model):
    images, labels, where = synthetic_blobs(40, seed=7)
    positives = images[labels == 1]
    heat = finding_heatmap(blob_model, positives, FINDING)
    negatives = finding_heatmap(blob_model, images[labels == 0], FINDING)
    assert heat.probability.mean() > negatives.probability.mean() + 0.3   # the smoke model did learn the blob
    peaks = heat.peak_patch()
    rng = np.random.default_rng(3)
    grid = SIDE // PATCH
    random_patches = []
    for peak in peaks:
        others = [(r, c) for r in range(grid) for c in range(grid) if (r, c) != tuple(peak)]
        random_patches.append(others[rng.integers(len(others))])
    drop_peak = heat.probability - finding_heatmap(blob_model, occlude(positives, peaks), FINDING).probability
    drop_random = heat.probability - finding_heatmap(
        blob_model, occlude(positives, np.array(random_patches)), FINDING).probability
    assert drop_peak.mean() > drop_random.mean() + 0.2
    # and the highlighted patch is where the blob was, for most images
    assert (peaks == where[labels.numpy() == 1]).all(axis=1).mean() >= 0.7


def test_maps_are_normalised_and_the_frozen_encoder_collects_no_gradient():
    torch.manual_seed(0)
    tokenizer = train_report_tokenizer(["no acute cardiopulmonary abnormality"] * 4, vocab_size=300)
    model = RadiologyMultimodalModel(tiny_dinov2_config(), tokenizer)   # frozen DINOv2, the demo's shape
    images, _, _ = synthetic_blobs(3, seed=4)
    heat = finding_heatmap(model, images, "Pneumothorax", temperature=2.0)
    assert heat.grid.shape == (3, 4, 4) and heat.probability.shape == (3,)
    assert np.isclose(heat.grid.min(axis=(1, 2)), 0).all() and np.isclose(heat.grid.max(axis=(1, 2)), 1).all()
    assert heat.upsampled(32).shape == (3, 32, 32)
    assert all(p.grad is None for p in model.parameters())
    with torch.no_grad():
        logit = model.detect(model.encode_views(images)[:, None])[:, 9]
    assert np.allclose(heat.probability, torch.sigmoid(logit / 2.0).numpy(), atol=1e-6)


def test_overlay_png_is_one_panel_per_view():
    images, _, _ = synthetic_blobs(2, seed=5)
    torch.manual_seed(0)
    tokenizer = train_report_tokenizer(["no acute cardiopulmonary abnormality"] * 4, vocab_size=300)
    model = RadiologyMultimodalModel(tiny_model_config(), tokenizer)
    heat = finding_heatmap(model, images, FINDING)
    png = overlay_png(images[:, 0].numpy(), heat, size=64)
    picture = Image.open(io.BytesIO(png))
    assert picture.format == "PNG" and picture.size == (128, 64) and picture.mode == "RGB"
    cold = overlay_rgb(np.full((4, 4), 0.5), np.zeros((4, 4)))
    assert (cold == 128).all()   # where the map is 0 the image is unchanged


def test_bad_inputs_are_clear_errors(tiny_tokenizer):
    torch.manual_seed(0)
    model = RadiologyMultimodalModel(tiny_model_config(), tiny_tokenizer)
    with pytest.raises(ExplainError, match="unknown finding"):
        finding_heatmap(model, torch.rand(1, 1, 32, 32), "Broken Heart")
    with pytest.raises(ExplainError, match=r"\(n, 1, 32, 32\)"):
        finding_heatmap(model, torch.rand(1, 3, 32, 32), FINDING)
    with pytest.raises(ExplainError, match="finite"):
        finding_heatmap(model, torch.full((1, 1, 32, 32), float("nan")), FINDING)
    with pytest.raises(ExplainError, match="one shape"):
        overlay_rgb(np.zeros((4, 4)), np.zeros((3, 3)))
