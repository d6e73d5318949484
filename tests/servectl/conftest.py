"""Fixtures shared by servectl's tests."""

from collections.abc import Iterator

import pytest

from tests.aws_emulator import moto_server


@pytest.fixture(scope="module")
def endpoint() -> Iterator[str]:
    """moto's S3 server on loopback, one per test module: the local AWS API emulator, not a fake."""
    with moto_server() as url:
        yield url
