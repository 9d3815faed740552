"""Data drift: a kernel two-sample test (maximum mean discrepancy) on study embeddings.

Built on alibi-detect's MMDDrift, PyTorch backend (`alibi_detect.cd.pytorch.mmd.MMDDriftTorch`: Gaussian RBF kernel,
bandwidth from the reference by the median heuristic, alibi's preprocessing and `predict` output). Two changes:
  * the permutation test is batched: alibi permutes and copies the (N, N) kernel matrix once per permutation (108 s
    for 1,000 permutations of 1,000 + 2,000 studies on 2 cores); here every permutation's MMD² comes from one
    matrix product K·T over indicator columns (identical values, tested against alibi's `mmd2_from_kernel_matrix`);
  * the p-value counts the observed statistic, (1 + #{MMD²_perm ≥ MMD²}) / (1 + B), so it is never 0 and
    "p < 0.01" needs B ≥ 100 permutations to be possible at all (B = 1,000 by default).

LICENCE: alibi-detect 0.13.0 is under the Business Source License 1.1; production use in a commercial product needs a
licence from Seldon. This file is the only one that imports it: replace `MMDDetector` (same `DriftDetector`
interface) to drop it.
"""

from __future__ import annotations

import numpy as np
import torch
from alibi_detect.cd.pytorch.mmd import MMDDriftTorch

from monitoring.detectors.base import DRIFT, OK, DriftDetector, DriftResult

PERMUTATION_CHUNK = 100   # permutations per matrix product: (N, 100) float64 indicator columns


def permutation_mmd2(kernel_mat: torch.Tensor, m: int, test_indices: torch.Tensor) -> torch.Tensor:
    """Unbiased MMD² of many relabellings from one kernel matrix.

    kernel_mat: (N, N) over [reference; current] with a zero diagonal; m: size of the current sample; test_indices
    (P, m): for each relabelling, the rows that play the current sample. Returns (P,) float64: the value alibi's
    `mmd2_from_kernel_matrix(kernel_mat[idx][:, idx], m, zero_diag=False)` gives for a permutation idx whose last m
    entries are those rows."""
    k = kernel_mat.to(torch.float64)
    big_n = k.shape[0]
    n = big_n - m
    rowsum = k.sum(dim=1)
    total = rowsum.sum()
    out = []
    for start in range(0, test_indices.shape[0], PERMUTATION_CHUNK):
        idx = test_indices[start:start + PERMUTATION_CHUNK]
        t = torch.zeros(big_n, idx.shape[0], dtype=torch.float64)
        t.scatter_(0, idx.T.long(), 1.0)                       # column p: 1 on the rows of relabelling p
        t_k_t = (t * (k @ t)).sum(dim=0)                        # Σ K over current × current
        t_k_r = t.T @ rowsum - t_k_t                            # Σ K over current × reference
        r_k_r = total - t_k_t - 2 * t_k_r                       # Σ K over reference × reference
        out.append(r_k_r / (n * (n - 1)) + t_k_t / (m * (m - 1)) - 2 * t_k_r / (n * m))
    return torch.cat(out)


class _BatchedPermutationMMD(MMDDriftTorch):
    """alibi-detect's PyTorch MMD detector with the batched permutation test and the corrected p-value."""

    def __init__(self, *args, seed: int = 0, **kwargs):
        super().__init__(*args, **kwargs)
        self.seed = seed

    def score(self, x) -> tuple[float, float, float]:
        x_ref, x = self.preprocess(x)
        x_ref, x = torch.from_numpy(x_ref).to(self.device), torch.from_numpy(x).to(self.device)
        m = x.shape[0]
        kernel_mat = self.kernel_matrix(x_ref, x)
        kernel_mat = kernel_mat - torch.diag(kernel_mat.diag())
        big_n = kernel_mat.shape[0]
        observed = permutation_mmd2(kernel_mat, m, torch.arange(big_n - m, big_n)[None])[0]
        generator = torch.Generator().manual_seed(self.seed)
        shuffled = torch.rand(self.n_permutations, big_n, generator=generator).argsort(dim=1)[:, big_n - m:]
        permuted = permutation_mmd2(kernel_mat, m, shuffled)
        self.last_p_value_alibi = float((observed <= permuted).double().mean())   # alibi's own definition
        p_value = float((1 + (permuted >= observed).sum()) / (1 + self.n_permutations))
        threshold = torch.sort(permuted, descending=True).values[int(self.p_val * len(permuted))]
        return p_value, float(observed), float(threshold)


class MMDDetector(DriftDetector):
    """MMD² permutation test of (M, k) current embeddings against (N, k) reference embeddings (already reduced, e.g.
    by the model's saved PCA). Drift when the p-value < alpha; fewer than min_samples current studies → insufficient
    data."""

    method = "mmd"

    def __init__(self, alpha: float = 0.01, permutations: int = 1000, min_samples: int = 50, seed: int = 0):
        super().__init__(min_samples)
        if not 0 < alpha < 1:
            raise ValueError(f"alpha must be in (0, 1), got {alpha}")
        if permutations < 1:
            raise ValueError(f"permutations must be ≥ 1, got {permutations}")
        self.alpha, self.permutations, self.seed = alpha, permutations, seed
        self._detector: _BatchedPermutationMMD | None = None

    def prepare(self, reference: np.ndarray) -> "MMDDetector":
        ref = np.asarray(reference, dtype=np.float32)
        if ref.ndim != 2 or len(ref) < 2 or not np.isfinite(ref).all():
            raise ValueError("the MMD reference must be a finite (N ≥ 2, k) array")
        self.n_reference = len(ref)
        self._detector = _BatchedPermutationMMD(ref, p_val=self.alpha, n_permutations=self.permutations,
                                                device="cpu", seed=self.seed)
        return self

    def predict(self, sample: np.ndarray) -> DriftResult:
        if self._detector is None:
            raise RuntimeError("MMDDetector.predict before prepare")
        x = np.asarray(sample, dtype=np.float32)
        n = len(x) if x.ndim == 2 else 0
        if n < max(self.min_samples, 2):
            return self.insufficient(n, f"{n} studies in the window; at least {max(self.min_samples, 2)} needed")
        if x.shape[1] != self._detector.x_ref.shape[1] or not np.isfinite(x).all():
            raise ValueError(f"current embeddings must be finite with {self._detector.x_ref.shape[1]} dimensions")
        out = self._detector.predict(x)["data"]
        sigma = self._detector.kernel.sigma
        return DriftResult(
            self.method, DRIFT if out["is_drift"] else OK, self.n_reference, n, p_value=float(out["p_val"]),
            distance=float(out["distance"]), threshold=float(out["distance_threshold"]),
            details={"alpha": self.alpha, "permutations": self.permutations, "statistic": "MMD² (unbiased)",
                     "p_value_alibi": self._detector.last_p_value_alibi, "kernel": "Gaussian RBF",
                     "sigma": [float(s) for s in np.atleast_1d(sigma.detach().cpu().numpy())],
                     "backend": "alibi-detect MMDDrift (pytorch), batched permutations"})
