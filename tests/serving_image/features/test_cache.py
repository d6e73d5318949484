"""The feature-row cache: hits within the TTL, expiry, the entry bound (LRU), and off at 0."""

import pytest

from serving_image.features.cache import FeatureCache

ROW = (1.0, 2.0)


class Clock:
    """A settable monotonic clock, so that expiry is tested without sleeping."""

    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_a_row_is_served_until_its_ttl_then_dropped() -> None:
    clock = Clock()
    cache = FeatureCache(entries=10, ttl_seconds=60, clock=clock)
    cache.put_many("svc", [(7, ROW)])
    clock.now += 59.9
    assert cache.get("svc", 7) == ROW, "within the TTL the row is a hit"
    clock.now += 0.1
    assert cache.get("svc", 7) is None, "at the TTL the row has expired"
    assert len(cache) == 0, "an expired row is dropped, not kept"


def test_rows_are_per_feature_service() -> None:
    cache = FeatureCache(entries=10, ttl_seconds=60)
    cache.put_many("a", [(1, ROW)])
    assert cache.get("b", 1) is None, "another service's row for the same entity is not this one's"


def test_the_least_recently_used_row_goes_beyond_the_bound() -> None:
    cache = FeatureCache(entries=2, ttl_seconds=60)
    cache.put_many("svc", [(1, ROW), (2, ROW)])
    assert cache.get("svc", 1) == ROW  # 1 is now more recent than 2
    cache.put_many("svc", [(3, ROW)])
    assert len(cache) == 2, "the cache never holds more than its entries"
    assert cache.get("svc", 2) is None, "the least recently used row was evicted"
    assert cache.get("svc", 1) == ROW and cache.get("svc", 3) == ROW


@pytest.mark.parametrize(("entries", "ttl"), [(0, 60.0), (10, 0.0)], ids=["no-entries", "no-ttl"])
def test_zero_turns_the_cache_off(entries: int, ttl: float) -> None:
    cache = FeatureCache(entries=entries, ttl_seconds=ttl)
    cache.put_many("svc", [(1, ROW)])
    assert not cache.enabled
    assert cache.get("svc", 1) is None and len(cache) == 0, "a disabled cache keeps nothing"
