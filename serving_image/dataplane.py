"""The protocol-neutral data plane: health, metadata, routing and inference.

Transports (REST, gRPC) decode requests into ``tensors`` objects and call this; it knows
neither HTTP nor gRPC. Every model version that loaded gets a dynamic batcher.
"""

import asyncio
import os
import random
import time
from collections.abc import Callable, Mapping
from concurrent.futures import Executor, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import numpy as np

from serving_image import __version__
from serving_image.access_log import log_event
from serving_image.assignment import EXPLICIT, STICKY, StickyUsers, from_mesh
from serving_image.batching import DynamicBatcher
from serving_image.datatypes import numpy_dtype
from serving_image.drift import DEFAULT_SAMPLE_RATE, DriftMonitor
from serving_image.errors import (
    InjectedFault,
    InvalidInput,
    ModelNotFound,
    ModelNotReady,
    Overloaded,
)
from serving_image.features.entities import EntityInputs
from serving_image.features.online import JOIN_KEY_SPEC, OnlineFeatures
from serving_image.feedback import Feedback, ServedRequests
from serving_image.metrics import Metrics
from serving_image.model_config import FaultConfig
from serving_image.quality import QualityMonitor
from serving_image.repository import Model, ModelVersion, Repository, failure_fields
from serving_image.response_cache import CacheLimits, ResponseCache, cache_key
from serving_image.runtime import PLATFORM, OnnxModel, TensorSpec
from serving_image.tensors import InferRequest, InferResponse, OutputTensor, check_against_model
from serving_image.tracing import Tracing

SERVER_NAME = "model-serving"
CACHE_OFF = CacheLimits()
EXTENSIONS = ("binary_tensor_data", "model_repository_variants")


@dataclass(frozen=True, slots=True)
class ModelMetadata:
    """The V2 model metadata: versions, platform and the tensors read from the ONNX graph."""

    name: str
    versions: list[str]
    platform: str
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]
    parameters: Mapping[str, str] | None = None
    """A version served from entity keys announces its join key here (serving_image/features/entities.py)."""

    def document(self) -> dict[str, object]:
        """The REST ``$metadata_model_response`` object."""
        document: dict[str, object] = {
            "name": self.name,
            "versions": self.versions,
            "platform": self.platform,
            "inputs": [spec.metadata() for spec in self.inputs],
            "outputs": [spec.metadata() for spec in self.outputs],
        }
        if self.parameters:
            document["parameters"] = dict(self.parameters)
        return document


@dataclass(frozen=True, slots=True)
class Recorded:
    """Feedback counted: against which model version, and for labels how many rows were right."""

    model: str
    version: str
    correct: int | None = None


@dataclass(frozen=True, slots=True)
class Target:
    """The model version a request was routed to."""

    model: Model
    version: ModelVersion
    assignment: str = EXPLICIT
    """How the version was chosen (`serving_image.assignment`), for the request counter's label."""


class _BatchMetrics:
    """Feeds one batcher's activity into the metrics, with its label values bound."""

    def __init__(self, metrics: Metrics, model: str, version: str) -> None:
        self._batch_size = metrics.batch_size.labels(model, version)
        self._depth = metrics.queue_depth.labels(model, version)
        self.queue_seconds = metrics.queue_seconds.labels(model, version)
        self._compute_seconds = metrics.compute_seconds.labels(model, version)
        self._request_compute = metrics.request_compute_seconds.labels(model, version)
        self._request_compute_squares = metrics.request_compute_seconds_squares.labels(model, version)

    def on_batch(self, rows: int, compute_seconds: float) -> None:
        self._batch_size.observe(rows)
        self._compute_seconds.observe(compute_seconds)

    def on_request(self, compute_share: float) -> None:
        """One request answered: its share of compute (0 from the response cache), and its square for
        the variance (servectl/experiments/cost.py)."""
        self._request_compute.observe(compute_share)
        self._request_compute_squares.inc(compute_share * compute_share)

    def on_queue_depth(self, depth: int) -> None:
        self._depth.set(depth)


class DataPlane:
    """Serves a loaded repository."""

    def __init__(
        self, repository: Repository, metrics: Metrics, served_capacity: int = 100_000,
        tracing: Tracing | None = None, cache_limits: CacheLimits = CACHE_OFF,
        drift_sample_rate: float = DEFAULT_SAMPLE_RATE, trust_assignment_header: bool = False,
        features: OnlineFeatures | None = None,
    ) -> None:  # fmt: skip
        self.repository = repository
        self.metrics = metrics
        # Entity-keyed requests (serving_image/features/): versions whose metadata name a feature service
        # may be sent its join key instead of their features; off without an online store.
        self.entities = EntityInputs(features)
        # How requests reach their version (serving_image/assignment.py): behind the mesh, the gateway says.
        self._trust_assignment = trust_assignment_header
        self._sticky_users = StickyUsers()
        # Live input drift counters (serving_image/drift.py): a sampled share of requests' rows.
        self.drift = DriftMonitor(metrics, drift_sample_rate)
        self._drift_flusher: asyncio.Task[None] | None = None
        # Served predictions against labelled feedback (serving_image/quality.py).
        self.quality = QualityMonitor(metrics)
        # Tracing and the response cache (serving_image/tracing.py, response_cache.py): both off by default.
        self.tracing = tracing
        self._cache_limits = cache_limits
        self._caches: dict[tuple[str, str], tuple[ResponseCache, Any, Any]] = {}
        self.draining = False
        self._batchers: dict[tuple[str, str], tuple[DynamicBatcher, _BatchMetrics]] = {}
        self._served = ServedRequests(capacity=served_capacity)
        ready_versions = [v for m in repository.models.values() for v in m.versions.values() if v.ready]
        self._executor = ThreadPoolExecutor(max_workers=max(1, len(ready_versions)), thread_name_prefix="ort")
        # Versions loaded on SIGHUP get threads of their own, so they do not queue behind the others' runs.
        self._added_executors: list[ThreadPoolExecutor] = []

    async def start(self) -> None:
        """Start a batcher per loaded version and publish readiness."""
        if self._drift_flusher is None:
            self._drift_flusher = asyncio.create_task(self.drift.flush_periodically())
        self.entities.start()
        for model in self.repository.models.values():
            for version in model.versions.values():
                self.drift.register(model.name, version)
                self.quality.register(model.name, version, model.config.quality.accuracy_margin)
                cost = (
                    None
                    if version.runtime is None
                    else _warm_up(version.runtime, model.name, version.version)
                )
                self._serve(model, version, cost, self._executor)
                await self.entities.bind(model.name, version.version, version.runtime)
        self._publish_weights()

    def _publish_weights(self) -> None:
        """Export the weights each model routes by now (at start and after every reload), so a rollout
        can tell when every server process applies a step's weights. Models without variants have none."""
        for model in self.repository.models.values():
            variants = model.config.variants if model.router is not None else None
            if variants is None:
                continue
            for version in sorted(set(variants.weights) | set(model.versions)):
                weight = variants.weights.get(version, 0)
                self.metrics.variant_weight.labels(model.name, version).set(weight)

    def _serve(self, model: Model, version: ModelVersion, cost: float | None, executor: Executor) -> None:
        """Publish a version's readiness and, if it loaded, give it a batcher (and a cache if configured)."""
        self.metrics.model_ready.labels(model.name, version.version).set(int(version.ready))
        if version.runtime is None:
            return
        observer = _BatchMetrics(self.metrics, model.name, version.version)
        batcher = DynamicBatcher(
            version.runtime.run,
            max_batch_size=model.config.max_batch_size if version.runtime.batchable else 0,
            max_queue_delay=model.config.max_queue_delay_ms / 1000,
            max_queue_size=model.config.max_queue_size,
            executor=executor,
            observer=observer,
            label=f"{model.name}/{version.version}",
            tracer=self.tracing,
        )
        if cost is not None:
            batcher.record_cost(cost, 1)
        self._batchers[(model.name, version.version)] = (batcher, observer)
        if self._cache_limits.enabled and model.config.response_cache:
            labels = (model.name, version.version)
            self._caches[labels] = (
                ResponseCache(self._cache_limits),
                self.metrics.response_cache_hits.labels(*labels),
                self.metrics.response_cache_misses.labels(*labels),
            )

    async def stop(self) -> None:
        """Finish queued work and release the threads."""
        await asyncio.gather(*(batcher.stop() for batcher, _ in self._batchers.values()))
        if self._drift_flusher is not None:
            self._drift_flusher.cancel()
        self.entities.stop()
        self.drift.flush()
        for executor in (self._executor, *self._added_executors):
            executor.shutdown(wait=True)
        if self.tracing is not None:
            self.tracing.shutdown()  # exports the spans still buffered

    def live(self) -> bool:
        """The process is up and its event loop answers."""
        return True

    def ready(self) -> bool:
        """Taking traffic: not draining, and every model loaded."""
        return not self.draining and self.repository.ready

    def server_metadata(self) -> dict[str, object]:
        """The V2 server metadata response."""
        return {"name": SERVER_NAME, "version": __version__, "extensions": list(EXTENSIONS)}

    def model(self, name: str) -> Model:
        """A model by name, or 404."""
        model = self.repository.models.get(name)
        if model is None:
            raise ModelNotFound(f"unknown model '{name}'")
        return model

    def version(self, model: Model, version: str) -> ModelVersion:
        """A version of a model, or 404."""
        entry = model.versions.get(version)
        if entry is None:
            raise ModelNotFound(f"model '{model.name}' has no version '{version}'")
        return entry

    def model_ready(self, name: str, version: str | None) -> bool:
        """Whether a model (all its routed versions) or one version is ready."""
        model = self.model(name)
        return self.version(model, version).ready if version else model.ready

    def model_metadata(self, name: str, version: str | None) -> ModelMetadata:
        """A model's metadata, for one version or the one it serves by default."""
        model = self.model(name)
        entry = self.version(model, version) if version else self._default_version(model)
        runtime = _loaded(model, entry)
        versions = sorted((v for v in model.versions if v.isdigit()), key=int)
        parameters = self.entities.parameters(model.name, entry.version)
        return ModelMetadata(model.name, versions, PLATFORM, runtime.inputs, runtime.outputs, parameters)

    def route(self, name: str, version: str | None, headers: Mapping[str, str]) -> Target:
        """The version that serves a request: the one asked for, or the variant router's choice."""
        # A draining server still serves what reaches it (see serving_image/drain.py): only readiness
        # turns false, so that load balancers stop routing here while the listeners stay open.
        target = self.assign(name, version, headers)
        self._shed(target)
        return target

    def assign(self, name: str, version: str | None, headers: Mapping[str, str]) -> Target:
        """`route` without shedding (an asynchronous job waits in the queue, not in the batcher): the
        version and how it was chosen; a sticky user's first request to it is counted."""
        model = self.model(name)
        if version:
            return Target(model, self.version(model, version), EXPLICIT)
        if model.router is None:
            raise ModelNotReady(f"model '{name}' is not ready: {model.error}")
        chosen, how, user = model.router.assign(headers)
        if self._trust_assignment:
            how, user = from_mesh(headers, how, user)
        target = Target(model, self.version(model, chosen), how)
        if how == STICKY and user is not None and self._sticky_users.first(name, chosen, user):
            self.metrics.sticky_users.labels(name, chosen).inc()
        return target

    def _shed(self, target: Target) -> None:
        """Refuse at once when the version's queue is full: before the body is read or decoded."""
        entry = self._batchers.get((target.model.name, target.version.version))
        limit = target.model.config.max_queue_size
        if entry is not None and entry[0].depth >= limit:
            raise Overloaded(
                f"model '{target.model.name}/{target.version.version}' queue is full ({limit} waiting); "
                "retry later"
            )

    def input_specs(self, target: Target) -> dict[str, TensorSpec]:
        """The routed version's inputs by name, to check a request before its tensors are decoded; the
        join key too for a version whose metadata names a feature service (served or refused in ``infer``)."""
        specs = {spec.name: spec for spec in _loaded(target.model, target.version).inputs}
        if self.entities.announced(target.model.name, target.version.version):
            specs.setdefault(JOIN_KEY_SPEC.name, JOIN_KEY_SPEC)
        return specs

    def check(self, target: Target, request: InferRequest) -> None:
        """Refuse (4xx) what ``infer`` would refuse before running: the inputs against the model, the
        batch size, the outputs asked for. A job is checked so at submit, so bad input never queues."""
        runtime = _loaded(target.model, target.version)
        limit = target.model.config.max_batch_size
        if not self.entities.check(target.model.name, target.version.version, request, limit):
            _feeds(request, runtime, limit)  # entity keys are looked up when the job runs
        _requested_outputs(request, runtime)

    async def infer(self, target: Target, request: InferRequest, trace: object = None) -> InferResponse:
        """Validate the inputs against the model, run them through its batcher, build the response.

        ``trace`` is the request's span when tracing is on, to parent its queue and batch spans. A request
        that sends the join key gets its features from the online store first.
        """
        runtime = _loaded(target.model, target.version)
        request = await self.entities.resolve(
            target.model.name, target.version.version, request, target.model.config.max_batch_size
        )
        feeds, rows = _feeds(request, runtime, target.model.config.max_batch_size)
        outputs = _requested_outputs(request, runtime)
        self.drift.observe(target.model.name, target.version.version, feeds)
        fault = target.model.router.faults.get(target.version.version) if target.model.router else None
        if fault is not None:
            await _inject(fault, f"{target.model.name}/{target.version.version}")
        key = (target.model.name, target.version.version)
        if self._caches and key in self._caches and target.model.config.response_cache:
            return await self._infer_cached(target, request, (feeds, rows), outputs, trace)
        batcher, observer = self._batchers[key]
        result = await batcher.submit(feeds, rows, trace)
        observer.queue_seconds.observe(result.queue_seconds)
        observer.on_request(result.compute_share)
        quality = self.quality.version(*key)
        return InferResponse(
            model=target.model.name,
            version=target.version.version,
            id=request.id,
            outputs=[
                OutputTensor(spec.name, spec.datatype, result.outputs[index], binary)
                for index, spec, binary in outputs
            ],
            predicted=None if quality is None else result.outputs[quality.output],
        )

    async def _infer_cached(
        self, target: Target, request: InferRequest, work: tuple[dict[str, np.ndarray], int],
        outputs: list[tuple[int, TensorSpec, bool]], trace: object,
    ) -> InferResponse:  # fmt: skip
        """The outputs cached for these exact inputs, or computed and stored (see response_cache.py)."""
        key = (target.model.name, target.version.version)
        cache, hits, misses = self._caches[key]
        # The class output is cached with the outputs asked for, so a hit still knows what was predicted.
        quality = self.quality.version(*key)
        indices = [index for index, _, _ in outputs]
        if quality is not None and quality.output not in indices:
            indices.append(quality.output)
        runtime = _loaded(target.model, target.version)
        digest = cache_key(request.inputs, [runtime.outputs[index].name for index in indices])
        arrays = cache.get(digest)
        (misses if arrays is None else hits).inc()
        if arrays is not None:
            self._batchers[key][1].on_request(0.0)  # a hit runs nothing
        if self.tracing is not None and trace is not None:
            self.tracing.mark_cache(trace, hit=arrays is not None)
        if arrays is None:
            batcher, observer = self._batchers[key]
            result = await batcher.submit(*work, trace)
            observer.queue_seconds.observe(result.queue_seconds)
            observer.on_request(result.compute_share)
            arrays = [result.outputs[index] for index in indices]
            cache.put(digest, arrays)
        return InferResponse(
            model=target.model.name,
            version=target.version.version,
            id=request.id,
            outputs=[
                OutputTensor(spec.name, spec.datatype, array, binary)
                for (_, spec, binary), array in zip(outputs, arrays, strict=False)
            ],
            predicted=None if quality is None else arrays[indices.index(quality.output)],
        )

    def remember(
        self,
        request_id: str,
        target: Target,
        caller: str | None = None,
        response: InferResponse | None = None,
    ) -> None:
        """Keep which version served a request, and to whom, for feedback that names only the request id;
        for a monitored classifier also each row's predicted class, for label feedback."""
        predicted, rows = None, 0
        quality = self.quality.version(target.model.name, target.version.version)
        if quality is not None and response is not None and response.predicted is not None:
            predicted, rows = quality.predicted(response.predicted), response.predicted.size
        self._served.remember(
            request_id, target.model.name, target.version.version, caller, predicted=predicted, rows=rows
        )

    def record_feedback(self, name: str, feedback: Feedback) -> Recorded:
        """Count a business outcome, or a label, against the version that served it."""
        model = self.model(name)
        if feedback.label is not None:
            return self._record_label(model, feedback)
        if feedback.request_id is not None:
            # At most once per request id, and only by the caller it was served to (see feedback.py).
            version = self._served.claim(model.name, feedback.request_id, feedback.caller)
        else:
            version = self.version(model, feedback.version or "").version
        self.metrics.feedback.labels(model.name, version, feedback.kind).inc()
        if feedback.value is not None:
            self.metrics.feedback_value.labels(model.name, version).inc(feedback.value)
            self.metrics.feedback_value_squares.labels(model.name, version).inc(feedback.value**2)
        return Recorded(model.name, version)

    def _record_label(self, model: Model, feedback: Feedback) -> Recorded:
        """Compare the labels with the predictions kept for the request; claim it only once they count."""
        # parse_feedback ensures both
        assert feedback.request_id is not None
        assert feedback.label is not None
        served = self._served.unanswered(model.name, feedback.request_id, feedback.caller)
        quality = self.quality.version(model.name, served.version)
        if quality is None:
            raise self.quality.not_monitored(model.name, served.version)
        judged = quality.judge(served, feedback.label, model.name)
        self._served.claim(model.name, feedback.request_id, feedback.caller)
        return Recorded(model.name, served.version, judged.correct)

    async def reload(self) -> list[str]:
        """Load the version directories that are new (or failed before), then apply every model's variants
        from its config.yaml again; the problems found, if any.

        Loading and warming up run in a thread, so requests go on being served by the versions already
        loaded; a new version takes traffic only once it is warm and the config that names it is applied.
        """
        added = await asyncio.to_thread(self._load_unloaded)
        ready = [entry for entry in added if entry[1].ready]
        executor = None
        if ready:
            executor = ThreadPoolExecutor(max_workers=len(ready), thread_name_prefix="ort")
            self._added_executors.append(executor)
        for model, version, cost in added:
            await self.entities.bind(model.name, version.version, version.runtime)  # before it is routed to
            model.versions[version.version] = version
            self._serve(model, version, cost, executor or self._executor)
        problems = self.repository.reload_variants()
        self._publish_weights()  # what applies now: the new weights, or the old ones a bad file kept
        self.metrics.config_reloads.labels("failed" if problems else "success").inc()
        return problems

    def _load_unloaded(self) -> list[tuple[Model, ModelVersion, float | None]]:
        """Load, warm up and register for drift every unloaded version directory (blocking; in a thread)."""
        added: list[tuple[Model, ModelVersion, float | None]] = []
        unloaded = self.repository.unloaded_versions()
        if unloaded:
            log_event("versions_loading", pid=os.getpid(), versions=[f"{m.name}/{n}" for m, n, _ in unloaded])
        for model, name, path in unloaded:
            version = self.repository.load_version(model, name, path)
            cost = None
            if version.runtime is None:
                log_event("model_load_failed", pid=os.getpid(), model=model.name, version=name,
                          path=str(version.path), reason=version.error)  # fmt: skip
            else:
                cost = _warm_up(version.runtime, model.name, name)
                log_event("model_warmed_up", pid=os.getpid(), model=model.name, version=name,
                          batch_sizes=len(version.runtime.warmed), problem=version.warm_up_problem,
                          loaded="on SIGHUP")  # fmt: skip
            self.drift.register(model.name, version)
            self.quality.register(model.name, version, model.config.quality.accuracy_margin)
            added.append((model, version, cost))
        return added

    async def drain(self, grace_seconds: float, inflight: Callable[[], int]) -> None:
        """Readiness false (if it is not yet), then wait up to the grace period for in-flight requests."""
        self.draining = True
        deadline = time.monotonic() + grace_seconds
        while inflight() and time.monotonic() < deadline:
            await asyncio.sleep(0.01)

    def _default_version(self, model: Model) -> ModelVersion:
        if model.router is None:
            raise ModelNotReady(f"model '{model.name}' is not ready: {model.error}")
        return self.version(model, model.router.versions[-1])


async def _inject(fault: FaultConfig, label: str) -> None:
    if fault.delay_ms:
        await asyncio.sleep(fault.delay_ms / 1000)
    if fault.error_ratio and random.random() < fault.error_ratio:
        raise InjectedFault(f"injected fault on '{label}' (error_ratio {fault.error_ratio})")


def _warm_up(runtime: OnnxModel, model: str, version: str) -> float | None:
    """Run one zero row before serving: the first run allocates, and its cost (seconds) seeds the batcher.

    Only where the repository's warm-up ran one row: where it failed, that failure is logged already.
    """
    if not runtime.batchable or 1 not in runtime.warmed:
        return None
    feeds = {
        spec.name: np.zeros((1, *spec.shape[1:]), dtype=numpy_dtype(spec.datatype)) for spec in runtime.inputs
    }
    try:
        runtime.run(feeds)
        started = time.perf_counter()
        runtime.run(feeds)
    except Exception as error:  # a model that cannot take zeros still serves; it just starts cold
        log_event("warm_up_failed", model=model, version=version, problem="the batcher's cost probe failed",
                  **failure_fields(error))  # fmt: skip
        return None
    return time.perf_counter() - started


def _loaded(model: Model, entry: ModelVersion) -> OnnxModel:
    if entry.runtime is None:
        raise ModelNotReady(f"model '{model.name}' version '{entry.version}' is not ready: {entry.error}")
    return entry.runtime


def _feeds(
    request: InferRequest, runtime: OnnxModel, max_batch_size: int
) -> tuple[dict[str, np.ndarray], int]:
    specs = {spec.name: spec for spec in runtime.inputs}
    feeds: dict[str, np.ndarray] = {}
    for tensor in request.inputs:
        spec = specs.get(tensor.name)
        if spec is None:
            raise InvalidInput(f"unknown input '{tensor.name}'; the model's inputs are {sorted(specs)}")
        if tensor.name in feeds:
            raise InvalidInput(f"input '{tensor.name}' is given more than once")
        check_against_model(tensor, spec)
        feeds[tensor.name] = tensor.data
    missing = sorted(set(specs) - set(feeds))
    if missing:
        raise InvalidInput(f"missing input(s) {missing}; the model's inputs are {sorted(specs)}")
    if not runtime.batchable:
        return feeds, 1
    row_counts = {tensor.shape[0] for tensor in request.inputs}
    if len(row_counts) != 1:
        raise InvalidInput(f"inputs disagree on the batch dimension: {sorted(row_counts)}")
    rows = row_counts.pop()
    if rows == 0:
        raise InvalidInput("the batch dimension is 0: send at least one row")
    if max_batch_size and rows > max_batch_size:
        raise InvalidInput(f"batch of {rows} rows exceeds the model's max_batch_size {max_batch_size}")
    return feeds, rows


def _requested_outputs(request: InferRequest, runtime: OnnxModel) -> list[tuple[int, TensorSpec, bool]]:
    if request.outputs is None:
        return [(index, spec, request.binary_outputs) for index, spec in enumerate(runtime.outputs)]
    indexed = {spec.name: (index, spec) for index, spec in enumerate(runtime.outputs)}
    chosen = []
    for wanted in request.outputs:
        if wanted.name not in indexed:
            raise InvalidInput(f"unknown output '{wanted.name}'; the model's outputs are {sorted(indexed)}")
        index, spec = indexed[wanted.name]
        chosen.append((index, spec, wanted.binary or request.binary_outputs))
    return chosen
