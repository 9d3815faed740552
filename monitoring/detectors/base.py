"""The one detector interface (after CheXstray's `model_drift/drift/base.py`): prepare on a reference, predict on a
sample, and a result every detector shares, so the policy and the reports read one shape.

    detector = SomeDetector(...).prepare(reference)
    result = detector.predict(sample)          # DriftResult: status "ok" | "drift" | "insufficient data"
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import asdict, dataclass, field

OK, DRIFT, INSUFFICIENT = "ok", "drift", "insufficient data"


@dataclass
class DriftResult:
    """One detector's verdict. p_value / distance / threshold are None when not computed (insufficient data)."""
    method: str
    status: str
    n_reference: int
    n_current: int
    p_value: float | None = None
    distance: float | None = None
    threshold: float | None = None
    details: dict = field(default_factory=dict)

    @property
    def is_drift(self) -> bool:
        return self.status == DRIFT

    def to_dict(self) -> dict:
        return {"is_drift": self.is_drift, **asdict(self)}


class DriftDetector(ABC):
    """prepare(reference) once, predict(sample) per window. Too small a sample gives status INSUFFICIENT, never an
    alarm and never an exception."""

    method: str = "base"

    def __init__(self, min_samples: int = 1):
        self.min_samples = int(min_samples)
        self.n_reference = 0

    @abstractmethod
    def prepare(self, reference) -> "DriftDetector":
        """Fit on the reference; returns self."""

    @abstractmethod
    def predict(self, sample) -> DriftResult:
        """Test a window against the reference."""

    def insufficient(self, n_current: int, why: str) -> DriftResult:
        return DriftResult(self.method, INSUFFICIENT, self.n_reference, int(n_current), details={"reason": why})
