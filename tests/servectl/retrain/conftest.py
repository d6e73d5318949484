"""A small model repository whose serving version was trained on synthetic rows, and CSVs of fresh rows
(the data and the repository come from servectl.drift.synthetic, which the drift loop shares)."""

from pathlib import Path

import pytest

from servectl.drift.synthetic import MODEL, build_repository, synthetic, write_csv

__all__ = ["MODEL", "synthetic", "write_csv"]


@pytest.fixture
def repository(tmp_path: Path) -> Path:
    """Version 1 of the model: build_models' logistic pipeline on 2,000 synthetic rows, with its profile."""
    return build_repository(tmp_path / "models")


@pytest.fixture
def fresh_csv(tmp_path: Path) -> Path:
    """3,000 unseen rows of the serving version's training distribution."""
    x, y = synthetic(3000, seed=3)
    return write_csv(tmp_path / "fresh.csv", x, y)
