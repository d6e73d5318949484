"""The V2 REST transport: a plain ASGI application, served by uvicorn.

No web framework: routing is a split of the path, which keeps the per-request cost a
fraction of a framework's. Only this module knows HTTP.
"""

import sys
import traceback
import zlib
from collections.abc import Awaitable, Callable, Mapping, MutableMapping
from typing import Any
from urllib.parse import quote, unquote

import orjson

from serving_image.access_log import AccessLog
from serving_image.auth import Gate, challenge
from serving_image.dataplane import DataPlane
from serving_image.errors import (
    InvalidInput,
    ModelNotFound,
    NotConfigured,
    Overloaded,
    PayloadTooLarge,
    RequestTimeout,
    ServingError,
)
from serving_image.feedback import FeedbackGuard, FeedbackLimiter
from serving_image.http_protocol import BODY_TIMED_OUT
from serving_image.job_callbacks import (
    CALLBACK_HEADER,
    CallbackPolicy,
    requested_callback,
    validate_callback_url,
)
from serving_image.job_queue import JobQueue, JobStatus, NewJob, iso_time
from serving_image.job_worker import (
    INPUT_REF_PARAMETER,
    caller_job,
    check_input_ref,
    decode_job,
    log_submitted,
    route_job,
)
from serving_image.rest_codec import (
    async_parameter,
    callback_parameter,
    decode_infer_request,
    encode_infer_response,
    parse_json,
)
from serving_image.settings import Settings
from serving_image.shadow import ShadowTraffic
from serving_image.tensors import TensorLimits
from serving_image.tracking import RequestTracker, Tracked

Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]

JSON = b"application/json"
HEADER_LENGTH = "inference-header-content-length"
VERSION_HEADER = b"x-model-version"
# The request span (serving_image/tracing.py): named by the route, low-cardinality; the model is an attribute.
_SPAN_NAME = "POST /v2/models/{model}/infer"
_SPAN_START = {"http.request.method": "POST"}
# Asynchronous inference (serving_image/job_queue.py): asked for by the request parameter or the header.
_RESPOND_ASYNC = "respond-async"
_NOT_CONFIGURED = "asynchronous inference is not configured"
_INPUT_REF_NAME = f'"{INPUT_REF_PARAMETER}"'.encode()
# SageMaker's inference container contract (docs/sagemaker.md): POST /invocations is a model's infer
# endpoint; the model is the repository's only one or the one these headers name, with its version.
TARGET_MODEL_HEADER = "x-amzn-sagemaker-target-model"
CUSTOM_ATTRIBUTES_HEADER = "x-amzn-sagemaker-custom-attributes"


class _Reply(Exception):
    """Raised by handlers to answer with a status and a JSON document."""

    def __init__(self, status: int, document: object) -> None:
        self.status = status
        self.document = document


class RestApp:
    """ASGI application for the Open Inference Protocol's REST endpoints and /metrics."""

    def __init__(
        self, dataplane: DataPlane, tracker: RequestTracker, shadow: ShadowTraffic, settings: Settings,
        jobs: JobQueue | None = None, job_log: AccessLog | None = None,
        callbacks: CallbackPolicy | None = None,
    ) -> None:  # fmt: skip
        self._dp = dataplane
        self._shadow = shadow
        self._tracker = tracker
        self._limit = settings.max_request_bytes
        # Auth (serving_image/auth.py): the logged caller is a verified token's or a trusted proxy's.
        self._gate = Gate.for_settings(settings)
        limiter = FeedbackLimiter(settings.feedback_rate_per_second, settings.feedback_burst)
        self._feedback_guard = FeedbackGuard(self._gate, limiter)
        self._id_header = settings.request_id_header.lower()
        self._tensor_limits = TensorLimits(settings.max_tensor_rank, settings.max_tensor_elements)
        self._tracing = dataplane.tracing  # serving_image/tracing.py; None when off
        # With a metrics port of its own (serving_image/metrics.py), /metrics is not served here.
        self._serves_metrics = settings.metrics_port is None
        # The job queue when async inference is configured; each submitted job is logged on job_log.
        self._jobs = jobs
        self._job_log = job_log
        self._callbacks = callbacks  # where a job's callback may go; None: callbacks are off (501)
        self._store = None if jobs is None else jobs.store  # input_ref's store; None: references refused

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":  # lifespan and websockets are not used
            return
        parts = _segments(scope)
        method = scope["method"]
        if (
            method == "POST"
            and len(parts) in (4, 6)
            and parts[:2] == ["v2", "models"]
            and parts[-1] == "infer"
        ):
            await self._infer(scope, receive, send, parts)
            return
        if method == "POST" and parts == ["invocations"]:  # resolved to a model's infer path in _infer_body
            await self._infer(scope, receive, send, parts)
            return
        if method == "POST" and len(parts) == 4 and parts[:2] == ["v2", "models"] and parts[3] == "feedback":
            await self._feedback(scope, receive, send, parts[2])
            return
        if method in ("GET", "HEAD") and len(parts) == 3 and parts[:2] == ["v2", "jobs"]:
            await self._job(scope, send, parts[2])
            return
        if (
            method in ("GET", "HEAD")
            and len(parts) == 5
            and parts[:2] == ["v2", "models"]
            and parts[3] == "jobs"
        ):
            await self._job(scope, send, parts[4], model=parts[2])
            return
        try:
            status, body, content_type = self._get(method, parts)
        except ServingError as error:
            status, body, content_type = error.status, orjson.dumps({"error": error.message}), JSON
        except _Reply as reply:
            status, body, content_type = reply.status, orjson.dumps(reply.document), JSON
        await _respond(send, status, body, [(b"content-type", content_type)])

    def _get(self, method: str, parts: list[str]) -> tuple[int, bytes, bytes]:
        if method not in ("GET", "HEAD"):
            raise _Reply(405, {"error": f"method {method} not allowed here"})
        if parts == ["metrics"] and self._serves_metrics:
            return 200, self._dp.metrics.exposition(), b"text/plain; version=0.0.4; charset=utf-8"
        if parts == ["v2"]:
            return 200, orjson.dumps(self._dp.server_metadata()), JSON
        if parts == ["v2", "health", "live"]:
            return 200, orjson.dumps({"live": self._dp.live()}), JSON
        if parts == ["v2", "health", "ready"]:
            return self._server_ready()
        if parts == ["ping"]:  # SageMaker's health check: 200 when ready, and not a 4xx but 503 when not
            ready = self._dp.ready()
            return (200 if ready else 503), orjson.dumps({"ready": ready}), JSON
        if len(parts) >= 3 and parts[:2] == ["v2", "models"]:
            return self._model_get(parts[2:])
        raise _Reply(404, {"error": f"no endpoint at /{'/'.join(parts)}"})

    def _server_ready(self) -> tuple[int, bytes, bytes]:
        ready = self._dp.ready()
        document: dict[str, object] = {"ready": ready}
        if self._dp.draining:
            document["reason"] = "shutting down"
        failures = self._dp.repository.failures()
        if failures:
            document["not_ready"] = [_failure(failure) for failure in failures]
        # The protocol: 200 means ready, a 4xx means not.
        return (200 if ready else 400), orjson.dumps(document), JSON

    def _model_get(self, rest: list[str]) -> tuple[int, bytes, bytes]:
        name, version = rest[0], None
        if len(rest) >= 3 and rest[1] == "versions":
            version, rest = rest[2], [rest[0], *rest[3:]]
        if len(rest) == 1:
            return 200, orjson.dumps(self._dp.model_metadata(name, version).document()), JSON
        if rest[1:] == ["ready"]:
            ready = self._dp.model_ready(name, version)
            document = {"name": name, "ready": ready}
            return (200 if ready else 400), orjson.dumps(document), JSON
        raise ModelNotFound(f"no endpoint at /v2/models/{'/'.join(rest)}")

    async def _infer(self, scope: Scope, receive: Receive, send: Send, parts: list[str]) -> None:
        headers = {key.decode("latin-1"): value.decode("latin-1") for key, value in scope["headers"]}
        tracked = self._tracker.start(
            "rest", headers.get(self._id_header), self._gate.caller(headers), headers
        )
        tracing = self._tracing
        span = None if tracing is None else tracing.start_request(_SPAN_NAME, headers, _SPAN_START)
        extra: list[tuple[bytes, bytes]] = []
        try:
            status, body, extra = await self._infer_body(scope, receive, parts, headers, tracked, span)
            outcome, error_name = ("accepted" if status == 202 else "success"), None
        except ServingError as error:
            status, body = error.status, orjson.dumps(error.document())
            outcome, error_name = error.outcome, type(error).__name__
            extra = challenge(error)  # WWW-Authenticate on a 401 or 403
        except Exception:  # a bug: answer 500, keep serving, and leave a trace for the operator
            traceback.print_exc(file=sys.stderr)
            status, body = 500, orjson.dumps({"error": "internal server error"})
            outcome, error_name = "server_error", "InternalError"
        response_headers = [(b"content-type", JSON), (b"x-request-id", tracked.request_id.encode()), *extra]
        if tracked.version:
            response_headers.append((VERSION_HEADER, tracked.version.encode()))
        try:
            await _respond(send, status, body, response_headers)
        finally:
            self._tracker.finish(tracked, status, outcome, error_name)
            if span is not None and tracing is not None:
                status_code = {"http.response.status_code": status}
                tracing.end_request(span, tracked, outcome, status_code, failed=status >= 500)

    async def _infer_body(
        self, scope: Scope, receive: Receive, parts: list[str], headers: dict[str, str], tracked: Tracked,
        span: object = None,
    ) -> tuple[int, bytes, list[tuple[bytes, bytes]]]:  # fmt: skip
        if parts == ["invocations"]:
            parts = invocation_path(sorted(self._dp.repository.models), headers)
        model_name, version = parts[2], (parts[4] if len(parts) == 6 and parts[3] == "versions" else None)
        if len(parts) == 6 and parts[3] != "versions":
            raise ModelNotFound(f"no endpoint at /{'/'.join(parts)}")
        if self._gate.enabled:  # before routing: an unauthenticated client learns nothing of the models
            tracked.caller = (await self._gate.authorize(headers, model_name, "infer")).subject
        if _prefers_async(headers):
            return await self._submit(scope, receive, model_name, version, headers, tracked, None)
        # Routing sheds load (429) before the body is read; the model's input specs bound the decoding.
        try:
            target = self._dp.route(model_name, version, headers)
        except Overloaded:
            if self._jobs is None:
                raise
            # A job waits in the queue, not in the batcher: only the body tells whether this is one.
            body = await _read_body(receive, headers, self._limit, scope)
            if not _asks_async(body, _header_length(headers)):
                raise
            return await self._submit(scope, receive, model_name, version, headers, tracked, body)
        tracked.model, tracked.version = target.model.name, target.version.version
        tracked.assignment = target.assignment
        specs = self._dp.input_specs(target)
        body = await _read_body(receive, headers, self._limit, scope)
        referencing = _referencing(body, _header_length(headers))
        if referencing is not None:  # its inputs are in the store: only a job can take them from there
            if not async_parameter(_parameters(referencing)):
                raise InvalidInput(
                    f"request parameter '{INPUT_REF_PARAMETER}' is for asynchronous jobs: "
                    'add "async": true or the header Prefer: respond-async'
                )
            return await self._submit(scope, receive, model_name, version, headers, tracked, body)
        request = decode_infer_request(
            model_name, version, body, _header_length(headers), specs, self._tensor_limits
        )
        if request.asynchronous:
            # Routed again by _submit, which never sheds: a job waits in the queue, not in the batcher.
            return await self._submit(scope, receive, model_name, version, headers, tracked, body)
        if request.id is not None and tracked.minted:
            self._tracker.adopt(tracked, request.id)
        self._shadow.mirror(target, request)
        response = await self._dp.infer(target, request, span)
        if tracked.minted:
            self._dp.remember(tracked.request_id, target, tracked.caller, response)
        payload, json_length = encode_infer_response(response)
        extra = (
            [] if json_length is None else [(b"inference-header-content-length", str(json_length).encode())]
        )
        return 200, payload, extra

    async def _submit(
        self, scope: Scope, receive: Receive, model: str, version: str | None, headers: dict[str, str],
        tracked: Tracked, body: bytes | None,
    ) -> tuple[int, bytes, list[tuple[bytes, bytes]]]:  # fmt: skip
        """Queue the request as a job, checked first as a run would check it: 202 and where to ask."""
        if self._jobs is None:
            raise NotConfigured(_NOT_CONFIGURED)
        target = route_job(self._dp, model, version, headers)
        tracked.model, tracked.version = target.model.name, target.version.version
        tracked.assignment = target.assignment
        if body is None:
            body = await _read_body(receive, headers, self._limit, scope)
        header_length = _header_length(headers)
        referencing, input_ref = _referencing(body, header_length), None
        if referencing is None:
            request = decode_job(self._dp, target, body, header_length, self._tensor_limits)
            request_id, callback_url = request.id, request.callback_url
        else:
            input_ref, request_id, callback_url = self._reference(referencing, body, header_length)
        callback = requested_callback(headers.get(CALLBACK_HEADER), callback_url)
        if request_id is not None and tracked.minted:
            self._tracker.adopt(tracked, request_id)
        job = NewJob(
            model=target.model.name, version=target.version.version, version_requested=version, body=body,
            header_length=header_length, caller=tracked.caller, request_id=tracked.request_id,
            callback_url=None if callback is None else validate_callback_url(callback, self._callbacks),
            input_ref=input_ref,
        )  # fmt: skip
        job_id = await self._jobs.submit(job)
        log_submitted(self._job_log, job_id, job)
        # Under the model's path, so a client behind the gateway can follow it: the mesh routes and
        # authorizes /v2/models/{m}/* by the model; /v2/jobs/{id} answers the same on the server itself.
        extra = [(b"location", job_location(job.model, job_id).encode())]
        if _prefers_async(headers):
            extra.append((b"preference-applied", _RESPOND_ASYNC.encode()))
        return 202, orjson.dumps({"id": job_id, "status": "pending"}), extra

    def _reference(
        self, document: dict[str, Any], body: bytes, header_length: int | None
    ) -> tuple[str, str | None, str | None]:
        """A job whose request is an object in the store (``input_ref``): the reference, the request
        id and the callback URL. Only the reference can be checked now; the worker reads the object."""
        parameters = _parameters(document)
        input_ref = check_input_ref(self._store, parameters[INPUT_REF_PARAMETER])
        for member in ("inputs", "outputs"):
            if member in document:
                name = INPUT_REF_PARAMETER
                raise InvalidInput(
                    f"a request with '{name}' has no '{member}': the object it names holds them"
                )
        if header_length is not None and header_length != len(body):
            raise InvalidInput(f"a request with '{INPUT_REF_PARAMETER}' has no binary data")
        async_parameter(parameters)  # a 400 unless a boolean
        request_id = document.get("id")
        if request_id is not None and not isinstance(request_id, str):
            raise InvalidInput("'id' must be a string")
        return input_ref, request_id, callback_parameter(parameters)

    async def _job(self, scope: Scope, send: Send, job_id: str, model: str | None = None) -> None:
        headers = {key.decode("latin-1"): value.decode("latin-1") for key, value in scope["headers"]}
        extra: list[tuple[bytes, bytes]] = []
        try:
            status, body = 200, await self._job_status(headers, job_id, model)
        except ServingError as error:
            status, body = error.status, orjson.dumps({"error": error.message})
            extra = challenge(error)
        await _respond(send, status, body, [(b"content-type", JSON), *extra])

    async def _job_status(self, headers: Mapping[str, str], job_id: str, model: str | None) -> bytes:
        """A job's state, with the V2 response once done; only to the caller that submitted it."""
        if self._jobs is None:
            raise NotConfigured(_NOT_CONFIGURED)
        return _job_document(await caller_job(self._jobs, self._gate, headers, job_id, model))

    async def _feedback(self, scope: Scope, receive: Receive, send: Send, model: str) -> None:
        headers = {key.decode("latin-1"): value.decode("latin-1") for key, value in scope["headers"]}
        extra: list[tuple[bytes, bytes]] = []
        try:
            # Who may post, and how often, is settled before the body is read (serving_image/feedback.py).
            client = scope.get("client")
            admitted = await self._feedback_guard.admit(headers, model, client[0] if client else None)
            body = await _read_body(receive, headers, self._limit, scope)
            feedback = self._feedback_guard.parse(admitted, model, parse_json(body))
            recorded = self._dp.record_feedback(model, feedback)
            self._tracker.log_feedback(feedback, recorded.model, recorded.version, recorded.correct)
            status, document = 200, {"model": recorded.model, "version": recorded.version, "recorded": True}
            if recorded.correct is not None:
                document["correct"] = recorded.correct
        except ServingError as error:
            status, document = error.status, {"error": error.message}
            extra = challenge(error)
        await _respond(send, status, orjson.dumps(document), [(b"content-type", JSON), *extra])


def _segments(scope: Scope) -> list[str]:
    """The path's segments, each percent-decoded on its own: ``%2F`` is part of a name, never a separator."""
    raw: bytes | None = scope.get("raw_path")
    if raw is None or b"%" not in raw:
        return [part for part in scope["path"].split("/") if part]
    return [unquote(part) for part in raw.decode("latin-1").split("/") if part]


def invocation_path(models: list[str], headers: Mapping[str, str]) -> list[str]:
    """The infer path a SageMaker ``/invocations`` request stands for: the model the target-model header
    names, else the repository's only one; the version ``version=<v>`` in the custom attributes names,
    else the variant router's choice. The names of the models are not told (the gate has not run yet)."""
    model = headers.get(TARGET_MODEL_HEADER)
    if model is None:
        if not models:
            raise ModelNotFound("the model repository has no model to invoke")
        if len(models) > 1:
            raise InvalidInput(
                f"this endpoint serves {len(models)} models: "
                "name one with the header X-Amzn-SageMaker-Target-Model"
            )
        model = models[0]
    if not model:
        raise InvalidInput("the header X-Amzn-SageMaker-Target-Model is empty: name a model")
    version = custom_attribute(headers.get(CUSTOM_ATTRIBUTES_HEADER, ""), "version")
    if version is None:
        return ["v2", "models", model, "infer"]
    if not version:
        raise InvalidInput("X-Amzn-SageMaker-Custom-Attributes: 'version=' names no version")
    return ["v2", "models", model, "versions", version, "infer"]


def custom_attribute(attributes: str, key: str) -> str | None:
    """The value of ``key=value`` among the ``;`` or ``,``-separated custom attributes, else None."""
    for item in attributes.replace(",", ";").split(";"):
        name, equals, value = item.partition("=")
        if equals and name.strip() == key:
            return value.strip()
    return None


def job_location(model: str, job_id: str) -> str:
    """Where a submitted job is followed: under its model's path, which the gateway routes."""
    return f"/v2/models/{quote(model, safe='')}/jobs/{job_id}"


def _prefers_async(headers: Mapping[str, str]) -> bool:
    """Whether the RFC 7240 ``Prefer`` header asks for ``respond-async``."""
    value = headers.get("prefer")
    if not value:
        return False
    return any(
        preference.split(";")[0].split("=")[0].strip().lower() == _RESPOND_ASYNC
        for preference in value.split(",")
    )


def _asks_async(body: bytes, header_length: int | None) -> bool:
    """Whether a request the batcher shed asks, in its ``parameters``, to run as a job (then it is
    queued rather than refused). Only this path reads the flag before decoding the inputs; a bad header
    length is left for the decoder to report."""
    end = len(body) if header_length is None else header_length
    if not 0 <= end <= len(body):
        return False
    parameters = parse_json(body[:end]).get("parameters", {})
    return isinstance(parameters, dict) and async_parameter(parameters)


def _referencing(body: bytes, header_length: int | None) -> dict[str, Any] | None:
    """The JSON header of a request that names ``input_ref`` in its parameters, else None. A body that
    does not contain the name is not parsed here (the decoder parses it once)."""
    end = len(body) if header_length is None else header_length
    if not 0 <= end <= len(body) or body.find(_INPUT_REF_NAME, 0, end) < 0:
        return None
    document = parse_json(body[:end])
    return document if INPUT_REF_PARAMETER in _parameters(document) else None


def _parameters(document: dict[str, Any]) -> dict[str, Any]:
    parameters = document.get("parameters", {})
    if not isinstance(parameters, dict):
        raise InvalidInput("request 'parameters' must be an object")
    return parameters


def _job_document(job: JobStatus) -> bytes:
    """The job's JSON; a finished job's stored V2 response is spliced in as it is, not parsed again."""
    document: dict[str, object] = {
        "id": job.id,
        "status": job.state,
        "model": job.model,
        "version": job.version,
        "version_requested": job.version_requested,
        "attempts": job.attempts,
        "created": iso_time(job.created),
        "started": iso_time(job.started),
        "finished": iso_time(job.finished),
    }
    if job.error is not None:
        document["error"] = job.error
    if job.input_ref is not None:
        document["input_ref"] = job.input_ref
    if job.callback is not None:
        document["callback"] = {
            "url": job.callback.url, "status": job.callback.status,
            "attempts": job.callback.attempts, "detail": job.callback.detail,
        }  # fmt: skip
    if job.state == "done" and job.response_ref is not None:  # a large result, in the object store
        document["response_ref"] = job.response_ref
    head = orjson.dumps(document)
    if job.state == "done" and job.result is not None:
        return head[:-1] + b',"response":' + job.result + b"}"
    return head


def _failure(failure: object) -> dict[str, object]:
    return {name: getattr(failure, name) for name in ("model", "version", "path", "reason")}


def _header_length(headers: dict[str, str]) -> int | None:
    raw = headers.get(HEADER_LENGTH)
    if raw is None:
        return None
    try:
        return int(raw)
    except ValueError:
        raise InvalidInput(f"Inference-Header-Content-Length must be an integer, got {raw!r}") from None


async def _read_body(receive: Receive, headers: dict[str, str], limit: int, scope: Scope) -> bytes:
    declared = headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise PayloadTooLarge(f"request body of {declared} bytes exceeds the limit of {limit} bytes")
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            if scope.get(BODY_TIMED_OUT):  # the connection already answered 408; log it as such
                raise RequestTimeout("request body not received in time")
            raise InvalidInput("client disconnected before sending the whole body")
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            raise PayloadTooLarge(f"request body exceeds the limit of {limit} bytes")
        chunks.append(chunk)
        if not message.get("more_body", False):
            break
    body = chunks[0] if len(chunks) == 1 else b"".join(chunks)
    return _decompress(body, headers.get("content-encoding"), limit)


def _decompress(body: bytes, encoding: str | None, limit: int) -> bytes:
    """Undo the request compression tritonclient can apply, never inflating past the limit."""
    if encoding is None or encoding == "identity":
        return body
    wbits = {"gzip": 16 + zlib.MAX_WBITS, "deflate": zlib.MAX_WBITS}.get(encoding)
    if wbits is None:
        raise InvalidInput(f"unsupported Content-Encoding '{encoding}'")
    inflater = zlib.decompressobj(wbits)
    try:
        data = inflater.decompress(body, limit + 1)
    except zlib.error as error:
        raise InvalidInput(f"body is not valid {encoding} data: {error}") from None
    if len(data) > limit or inflater.unconsumed_tail:
        raise PayloadTooLarge(f"decompressed request body exceeds the limit of {limit} bytes")
    if not inflater.eof:
        raise InvalidInput(f"body is truncated {encoding} data")
    if inflater.unused_data:
        # A second gzip member or bytes after the stream: refuse rather than guess what was meant.
        raise InvalidInput(f"{len(inflater.unused_data)} bytes follow the end of the {encoding} data")
    return data


async def _respond(send: Send, status: int, body: bytes, headers: list[tuple[bytes, bytes]]) -> None:
    headers.append((b"content-length", str(len(body)).encode()))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})
