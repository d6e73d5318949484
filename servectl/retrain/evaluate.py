"""Metrics of a model on a labelled set (run through onnxruntime) and the decision to publish or refuse.

The decision is separate from the metrics: :func:`judge` takes both models' metrics and the margin and
returns the reasons to refuse (none: publish).
"""

from dataclasses import dataclass

import numpy as np
import onnxruntime as ort
from numpy.typing import NDArray
from sklearn.metrics import log_loss

from serving_image import model_zoo


@dataclass(frozen=True)
class Metrics:
    """Accuracy and log loss (natural log) on one set."""

    accuracy: float
    log_loss: float

    def to_json(self) -> dict[str, float]:
        """Rounded for the card and the command's output."""
        return {"accuracy": round(self.accuracy, 6), "log_loss": round(self.log_loss, 6)}


def measure(session: ort.InferenceSession, x: NDArray[np.float32], y: NDArray[np.int64]) -> Metrics:
    """The model's accuracy and log loss on the rows ``x`` with labels ``y``."""
    labels, probabilities = model_zoo.predict(session, x)
    # float32 rows sum to 1 only within rounding, which log_loss warns about: renormalise in float64.
    shares = probabilities.astype(np.float64)
    shares /= shares.sum(axis=1, keepdims=True)
    loss = log_loss(y, shares, labels=list(range(model_zoo.N_CLASSES)))
    return Metrics(accuracy=float(np.mean(labels == y)), log_loss=float(loss))


def judge(results: dict[str, dict[str, Metrics]], margin: float) -> list[str]:
    """Why the candidate must not be published: worse than the serving version beyond ``margin`` on a set.

    ``results`` maps a set's name to ``{"candidate": ..., "serving": ...}``. Worse means an accuracy lower
    by more than ``margin``, or a log loss higher by more than ``margin`` (both absolute).
    """
    reasons = []
    for name, pair in results.items():
        candidate, serving = pair["candidate"], pair["serving"]
        if candidate.accuracy < serving.accuracy - margin:
            reasons.append(
                f"{name}: accuracy {candidate.accuracy:.4f} is below the serving version's "
                f"{serving.accuracy:.4f} by more than the margin {margin}"
            )
        if candidate.log_loss > serving.log_loss + margin:
            reasons.append(
                f"{name}: log loss {candidate.log_loss:.4f} is above the serving version's "
                f"{serving.log_loss:.4f} by more than the margin {margin}"
            )
    return reasons
