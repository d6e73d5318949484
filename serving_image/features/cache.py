"""The server's bounded cache of feature rows, per (feature service, entity), with a TTL.

A hit saves the online store's round trip (about 0.4 ms on the local SQLite store, more in-region), at
the price of serving a row up to ``ttl_seconds`` older than the store's. Only complete rows are kept: an
unknown entity or a row with a missing value is never cached, so it can never come back as a zero and a
later materialization that fills it is seen at once. Memory is bounded by ``entries`` (least recently used
rows go first); a row of the bundled service is 30 Python floats, about 1 KiB, so the default 10,000
entries hold about 10 MiB.
"""

import time
from collections import OrderedDict
from collections.abc import Callable, Iterable

Row = tuple[float, ...]
"""One entity's feature values, in the service's column order."""


class FeatureCache:
    """Least-recently-used rows that expire ``ttl_seconds`` after they were fetched; off when either is 0."""

    def __init__(self, entries: int, ttl_seconds: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.entries = entries
        self.ttl_seconds = ttl_seconds
        self._clock = clock
        self._rows: OrderedDict[tuple[str, int], tuple[float, Row]] = OrderedDict()

    @property
    def enabled(self) -> bool:
        """Whether rows are kept at all (``entries`` and ``ttl_seconds`` both above 0)."""
        return self.entries > 0 and self.ttl_seconds > 0

    def __len__(self) -> int:
        return len(self._rows)

    def get(self, service: str, entity: int) -> Row | None:
        """The entity's row if fetched less than ``ttl_seconds`` ago; an expired row is dropped."""
        key = (service, entity)
        found = self._rows.get(key)
        if found is None:
            return None
        expires, row = found
        if self._clock() >= expires:
            del self._rows[key]
            return None
        self._rows.move_to_end(key)
        return row

    def put_many(self, service: str, rows: Iterable[tuple[int, Row]]) -> None:
        """Keep freshly fetched complete rows, evicting the least recently used beyond ``entries``."""
        if not self.enabled:
            return
        expires = self._clock() + self.ttl_seconds
        for entity, row in rows:
            key = (service, entity)
            self._rows[key] = (expires, row)
            self._rows.move_to_end(key)
        while len(self._rows) > self.entries:
            self._rows.popitem(last=False)
