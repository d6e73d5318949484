"""Reads of Feast's online store for entity-keyed requests: one blocking call at a time, coalesced.

``get_online_features`` blocks, so it runs on one thread of its own (Feast's SQLite store shares one
connection), never on the event loop. While a read runs, the lookups that arrive wait together and go
to the store as one call when it returns (the dynamic batching the model's batcher does for inference):
eight concurrent lookups cost two calls instead of eight waits in line, and a lookup whose request has
stopped waiting (its budget passed, see online.py) is dropped before its call, so a store that comes
back after a stall does not first work through a backlog of abandoned lookups.
"""

import asyncio
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, TypeVar

from serving_image.features.schema import JOIN_KEY

Fetched = tuple[float | None, ...]
"""An entity's values as Feast answered them, in the service's order: None where the store has none."""
T = TypeVar("T")
_Group = tuple[Any, tuple[str, ...], dict[int, None]]
"""A feature service's definition, its ordered columns, and the distinct ids to read (in order)."""


@dataclass(slots=True)
class _Waiting:
    definition: Any
    ordered: tuple[str, ...]
    ids: list[int]
    future: "asyncio.Future[dict[int, Fetched | None]]"


@dataclass(slots=True)
class StoreReads:
    """The lookup thread and the lookups waiting for it; ``calls`` counts the store calls made."""

    store: Any
    calls: int = 0
    _executor: ThreadPoolExecutor = field(
        default_factory=lambda: ThreadPoolExecutor(max_workers=1, thread_name_prefix="feast")
    )
    _waiting: list[_Waiting] = field(default_factory=list)
    _reading: bool = False

    def read(
        self, definition: Any, ordered: tuple[str, ...], ids: list[int]
    ) -> "asyncio.Future[dict[int, Fetched | None]]":
        """A future of each id's row of the service ``definition`` (None: the store has none); cancel it
        to give up."""
        future: asyncio.Future[dict[int, Fetched | None]] = asyncio.get_running_loop().create_future()
        self._waiting.append(_Waiting(definition, ordered, ids, future))
        if not self._reading:
            self._next()
        return future

    async def run(self, call: Callable[..., T], *args: Any) -> T:
        """Another blocking call on the lookup thread (the registry refresh), between reads."""
        return await asyncio.get_running_loop().run_in_executor(self._executor, call, *args)

    def close(self) -> None:
        """Release the thread; a read still blocked in the store is not waited for."""
        self._executor.shutdown(wait=False, cancel_futures=True)

    def _next(self) -> None:
        """Send every lookup still waited for to the store, one call per feature service."""
        batch = [waiting for waiting in self._waiting if not waiting.future.done()]
        self._waiting = []
        self._reading = bool(batch)
        if not batch:
            return
        groups: dict[int, _Group] = {}
        for waiting in batch:
            group = groups.setdefault(id(waiting.definition), (waiting.definition, waiting.ordered, {}))
            group[2].update(dict.fromkeys(waiting.ids))
        keys = list(groups)
        self.calls += len(keys)
        running = self._executor.submit(_read_groups, self.store, [groups[key] for key in keys])
        loop = asyncio.get_running_loop()
        running.add_done_callback(lambda done: loop.call_soon_threadsafe(self._answer, batch, keys, done))

    def _answer(
        self, batch: list[_Waiting], keys: list[int], done: "Future[list[dict[int, Fetched | None]]]"
    ) -> None:
        """Hand each lookup its rows (or the store's error), then start on those that arrived meanwhile."""
        if done.cancelled():  # the thread was shut down: the server is stopping
            return
        error = done.exception()
        answers = {} if error is not None else dict(zip(keys, done.result(), strict=True))
        for waiting in batch:
            if waiting.future.done():  # its request stopped waiting
                continue
            if error is not None:
                waiting.future.set_exception(error)
            else:
                rows = answers[id(waiting.definition)]
                waiting.future.set_result({entity_id: rows[entity_id] for entity_id in waiting.ids})
        self._next()


def _read_groups(store: Any, groups: list[_Group]) -> list[dict[int, Fetched | None]]:
    return [read_rows(store, definition, ordered, list(ids)) for definition, ordered, ids in groups]


def read_rows(
    store: Any, definition: Any, ordered: tuple[str, ...], ids: list[int]
) -> dict[int, Fetched | None]:
    """Feast's answer for ``ids``: a row each in ``ordered`` columns (None where a value is null), or None
    for an entity the store has no row for (every feature NOT_FOUND); blocking."""
    from feast.protos.feast.serving.ServingService_pb2 import FieldStatus

    response = store.get_online_features(features=definition, entity_rows=[{JOIN_KEY: i} for i in ids])
    columns = response.to_dict()
    names = response.proto.metadata.feature_names.val
    statuses = [
        result.statuses
        for name, result in zip(names, response.proto.results, strict=True)
        if name != JOIN_KEY
    ]
    return {
        entity_id: (
            None
            if all(status[row] == FieldStatus.NOT_FOUND for status in statuses)
            else tuple(columns[name][row] for name in ordered)
        )
        for row, entity_id in enumerate(ids)
    }
