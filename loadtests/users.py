"""Locust users for the V2 protocol: REST (`FastHttpUser`) and gRPC (a `User` that fires request events).

Each request names its statistics entry after the model and the version that served it (from the
response), so locust's own tables, CSV files and the SLO gates see every variant apart.
"""

import random
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import grpc
import grpc.experimental.gevent as grpc_gevent
import numpy as np
import orjson
import requests
from gevent.lock import Semaphore
from locust import FastHttpUser, User, between, task
from tritonclient.grpc import service_pb2, service_pb2_grpc

from loadtests.auth import auth_headers
from loadtests.drift import BUNDLED_REPOSITORY, DriftSpec, Sampler, load_sampler, shifted_at
from loadtests.payloads import Tensor, numpy_dtype, rest_body, tensors
from loadtests.profiles import Profile
from loadtests.traffic import VERSION_HEADER, StickyCheck, entry_name, pick

# grpcio must yield to gevent's loop, or one gRPC call blocks every user of the process.
grpc_gevent.init_gevent()

PAYLOAD_VARIANTS = 32
"""Distinct payloads prepared per model, so requests differ without generating one per request."""


@dataclass(frozen=True, kw_only=True)
class DriftInputs:
    """A drift profile's model: inputs drawn per request from its training profile, shifted in the period."""

    spec: DriftSpec
    sampler: Sampler
    shift: dict[str, float]
    """Per shifted feature, how far it moves (in its own units)."""
    template: list[Tensor]
    """The model's inputs as generated from its metadata; the profiled one is replaced per request."""

    def inputs(self, rows: int, rng: np.random.Generator, elapsed_s: float) -> list[Tensor]:
        """Fresh inputs: the profiled input sampled, shifted if `elapsed_s` is inside the shift period."""
        shift = self.shift if shifted_at(self.spec, elapsed_s) else None
        return [
            replace(t, data=self.sampler.rows(rows, rng, shift).astype(numpy_dtype(t.datatype)))
            if t.name == self.sampler.input
            else t
            for t in self.template
        ]


@dataclass(frozen=True, kw_only=True)
class ModelPayloads:
    """Ready-made requests for one model, for either protocol (a drift profile's model: made per request)."""

    rest: list[str]
    grpc: list[Any]
    drift: DriftInputs | None = None


def grpc_request(model: str, inputs: list[Tensor]) -> Any:
    """A V2 gRPC inference request with raw tensor contents."""
    request = service_pb2.ModelInferRequest(model_name=model)
    for t in inputs:
        request.inputs.add(name=t.name, datatype=t.datatype, shape=list(t.data.shape))
        request.raw_input_contents.append(t.data.tobytes())
    return request


class Catalog:
    """Per process: the profile, the auth header, each model's payloads (built from its metadata once) and
    the sticky map."""

    profile: Profile | None = None
    grpc_target: str | None = None
    auth: dict[str, str] = {}
    repository: Path = BUNDLED_REPOSITORY
    """Where a drift profile's model reads its training profile (`--model-repository`)."""
    started = time.monotonic()
    """When the test started (the drift period counts from here)."""
    sticky = StickyCheck()
    _payloads: dict[str, ModelPayloads] = {}
    _lock = Semaphore()

    @classmethod
    def configure(
        cls,
        profile: Profile,
        grpc_target: str | None,
        token: str | None = None,
        repository: Path = BUNDLED_REPOSITORY,
    ) -> None:
        """Set by the `init` listener in every process (master and workers alike)."""
        cls.profile, cls.grpc_target, cls.auth = profile, grpc_target, auth_headers(token)
        cls.repository = repository

    @classmethod
    def elapsed(cls) -> float:
        """Seconds since the test started."""
        return time.monotonic() - cls.started

    @classmethod
    def payloads(cls, host: str, model: str) -> ModelPayloads:
        """The model's payloads, built from `GET /v2/models/{model}` on first use."""
        with cls._lock:
            if model not in cls._payloads:
                cls._payloads[model] = cls._build(host, model)
            return cls._payloads[model]

    @classmethod
    def metadata(cls, host: str, model: str) -> dict[str, Any]:
        """The model's V2 metadata: the profile's document for it where it names a directory (a target that
        routes only inference), else what the target answers to `GET /v2/models/{model}`."""
        assert cls.profile is not None, "the init listener configures the catalog"
        directory = cls.profile.traffic.metadata
        if directory is not None:
            return dict(orjson.loads((directory / f"{model}.json").read_bytes()))
        response = requests.get(f"{host.rstrip('/')}/v2/models/{model}", headers=cls.auth, timeout=10)
        response.raise_for_status()
        return dict(response.json())

    @classmethod
    def _build(cls, host: str, model: str) -> ModelPayloads:
        assert cls.profile is not None, "the init listener configures the catalog"
        metadata = cls.metadata(host, model)
        rng = np.random.default_rng(len(cls._payloads))
        spec = cls.profile.drift
        if spec is not None and spec.model in (None, model):
            return ModelPayloads(rest=[], grpc=[], drift=cls._drift(model, spec, metadata, rng))
        rest, grpc_requests = [], []
        for _ in range(PAYLOAD_VARIANTS):
            inputs = tensors(metadata, cls.profile.traffic.rows, rng)
            rest.append(orjson.dumps(rest_body(inputs)).decode())
            grpc_requests.append(grpc_request(model, inputs))
        return ModelPayloads(rest=rest, grpc=grpc_requests)

    @classmethod
    def _drift(
        cls, model: str, spec: DriftSpec, metadata: dict[str, Any], rng: np.random.Generator
    ) -> DriftInputs:
        template = tensors(metadata, cls.profile.traffic.rows if cls.profile else 1, rng)
        sampler = load_sampler(cls.repository, model, spec.version)
        profiled = next((t for t in template if t.name == sampler.input), None)
        if profiled is None:
            raise RuntimeError(f"model {model} has no input {sampler.input!r}, which its profile describes")
        sampler = load_sampler(cls.repository, model, spec.version, width=int(profiled.data.shape[-1]))
        return DriftInputs(
            spec=spec,
            sampler=sampler,
            shift=sampler.shift_amounts(spec.features, spec.shift_sd),
            template=template,
        )


def _profile() -> Profile:
    assert Catalog.profile is not None, "the init listener configures the catalog"
    return Catalog.profile


def _think(user: User) -> float:
    low, high = _profile().traffic.think_ms
    return between(low / 1000, high / 1000)(user)


class RestUser(FastHttpUser):
    """V2 REST inference with JSON tensors."""

    wait_time = _think

    def on_start(self) -> None:
        """Each user has its own random streams, so users do not move in step."""
        self.rng = random.Random()
        self.np_rng = np.random.default_rng()

    @task
    def infer(self) -> None:
        """One inference request for a model and an end user picked by the profile's weights."""
        model, headers = pick(_profile().traffic, self.rng)
        payloads = Catalog.payloads(self.host or "", model)
        if payloads.drift is not None:
            inputs = payloads.drift.inputs(_profile().traffic.rows, self.np_rng, Catalog.elapsed())
            body = orjson.dumps(rest_body(inputs)).decode()
        else:
            body = self.rng.choice(payloads.rest)
        sent = {**headers, **Catalog.auth, "content-type": "application/json"}
        with self.client.post(
            f"/v2/models/{model}/infer", data=body, headers=sent, name=model, catch_response=True
        ) as response:
            version = response.headers.get(VERSION_HEADER) if response.headers else None
            response.request_meta["name"] = entry_name(model, version)
            if response.status_code != 200:
                response.failure(f"HTTP {response.status_code}: {(response.text or '')[:200]}")
                return
            document = response.json()
            if version is None or document.get("model_version") != version or not document.get("outputs"):
                response.failure(f"a response without outputs or with mismatched versions ({version})")
                return
            moved = Catalog.sticky.observe(model, headers, version)
            if moved:
                response.failure(moved)


class GrpcUser(User):
    """V2 gRPC inference (`inference.GRPCInferenceService/ModelInfer`) with raw tensor contents."""

    wait_time = _think

    def on_start(self) -> None:
        """One channel per user, closed when the user stops."""
        assert Catalog.grpc_target, "GrpcUser runs only with a gRPC target"
        self.rng = random.Random()
        self.np_rng = np.random.default_rng()
        self.channel = grpc.insecure_channel(Catalog.grpc_target)
        self.stub = service_pb2_grpc.GRPCInferenceServiceStub(self.channel)

    def on_stop(self) -> None:
        """Close the channel."""
        self.channel.close()

    @task
    def infer(self) -> None:
        """One inference request, reported to locust as a `gRPC` request event."""
        model, headers = pick(_profile().traffic, self.rng)
        payloads = Catalog.payloads(self.host or "", model)
        if payloads.drift is not None:
            inputs = payloads.drift.inputs(_profile().traffic.rows, self.np_rng, Catalog.elapsed())
            request = grpc_request(model, inputs)
        else:
            request = self.rng.choice(payloads.grpc)
        started = time.perf_counter()
        version: str | None = None
        length = 0
        exception: Exception | None = None
        try:
            metadata = [*headers.items(), *Catalog.auth.items()]
            reply = self.stub.ModelInfer(request, metadata=metadata, timeout=10)
            version, length = reply.model_version or None, reply.ByteSize()
            if version is None or not reply.outputs:
                exception = RuntimeError("a response without outputs or without its model version")
            else:
                moved = Catalog.sticky.observe(model, headers, version)
                exception = RuntimeError(moved) if moved else None
        except grpc.RpcError as error:
            exception = RuntimeError(f"{error.code().name}: {error.details()}")
        self.environment.events.request.fire(
            request_type="gRPC",
            name=entry_name(model, version),
            response_time=(time.perf_counter() - started) * 1000,
            response_length=length,
            exception=exception,
            context={},
        )
