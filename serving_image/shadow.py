"""Shadow traffic: a copy of live requests mirrored to a version whose answers are discarded.

The copy runs after the live request is queued and never delays it; its outcome and
latency are counted with ``protocol="shadow"`` so they never mix into live traffic. A copy
that fails with anything but a ``ServingError`` (a bug, as on the live path) is also logged
with its traceback, since no client is there to see the 500.
"""

import asyncio
import time

from serving_image.access_log import log_event
from serving_image.dataplane import DataPlane, Target
from serving_image.errors import ServingError
from serving_image.metrics import outcome_class
from serving_image.repository import failure_fields
from serving_image.segments import OTHER
from serving_image.tensors import InferRequest


class ShadowTraffic:
    """Mirrors requests as each model's variant config asks."""

    def __init__(self, dataplane: DataPlane) -> None:
        self._dp = dataplane
        self._tasks: set[asyncio.Task[None]] = set()

    def mirror(self, target: Target, request: InferRequest) -> None:
        """Maybe send a copy of this request to the model's shadow version, without waiting for it."""
        router = target.model.router
        version = router.shadow(target.version.version) if router is not None else None
        if version is None:
            return
        entry = target.model.versions.get(version)
        if entry is None or not entry.ready:
            return
        # The copy keeps the live request's assignment label; shadow requests are never compared anyway.
        copy = Target(target.model, entry, target.assignment)
        task = asyncio.get_running_loop().create_task(self._run(copy, request))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    @property
    def pending(self) -> int:
        """Mirrored requests still running."""
        return len(self._tasks)

    async def _run(self, target: Target, request: InferRequest) -> None:
        started = time.perf_counter()
        outcome = "success"
        try:
            await self._dp.infer(target, request)
        except ServingError as error:
            outcome = error.outcome
        except Exception as error:
            outcome = "server_error"
            log_event("shadow_failed", model=target.model.name, version=target.version.version,
                      **failure_fields(error))  # fmt: skip
        labels = (target.model.name, target.version.version, "shadow")
        # A mirrored request carries no client headers to the shadow version: its segment is `other`.
        self._dp.metrics.requests.labels(*labels, target.assignment, outcome, OTHER).inc()
        elapsed = time.perf_counter() - started
        self._dp.metrics.request_seconds.labels(*labels, outcome_class(outcome)).observe(elapsed)
