"""Training-serving skew: whether two model inputs for the same entities are the same tensor.

The skew test (tests/serving_image/features/test_skew.py) builds one input the training way (Feast's
historical retrieval) and one the serving way (the online store), both through
:func:`serving_image.features.definition.to_model_input`, and asks this module for the differences. Same
means same columns in the same order, same dtype, same shape and equal values (``np.array_equal``, no
tolerance: a float32 tensor that went through float64 and back must still be bit-for-bit the same).
"""

from collections.abc import Sequence

import numpy as np
from numpy.typing import NDArray

SHOWN = 5
"""Differing cells named in a message; the count covers the rest."""


def differences(
    training: NDArray[np.generic],
    serving: NDArray[np.generic],
    training_columns: Sequence[str] | None = None,
    serving_columns: Sequence[str] | None = None,
) -> list[str]:
    """Why ``serving`` is not the tensor ``training`` is (empty: identical); columns checked when given."""
    found: list[str] = []
    named = training_columns is not None and serving_columns is not None
    if named and list(training_columns or ()) != list(serving_columns or ()):
        found.append(
            f"column order: training {list(training_columns or ())}, serving {list(serving_columns or ())}"
        )
    if training.dtype != serving.dtype:
        found.append(f"dtype: training {training.dtype}, serving {serving.dtype}")
    if training.shape != serving.shape:
        found.append(f"shape: training {training.shape}, serving {serving.shape}")
        return found
    if not np.array_equal(training, serving):
        cells = np.argwhere(training != serving)
        shown = ", ".join(
            f"[{row}, {column}] {training[row, column]!r} != {serving[row, column]!r}"
            for row, column in cells[:SHOWN].tolist()
        )
        found.append(f"values: {len(cells)} cells differ ({shown})")
    return found
