"""Asynchronous inference over gRPC: ``inference.jobs.AsyncInferenceService`` (proto/async_inference.proto).

``SubmitInfer`` queues a V2 ``ModelInferRequest`` as a job and ``GetJob`` reports it, as REST's
``"async": true`` and ``GET /v2/jobs/{id}`` do, on the same gRPC port as the protocol's service: the
same checks at submit (the job's body is decoded by ``job_worker.decode_job``, which the worker
runs), the same auth and caller checks, and the same errors as gRPC statuses (RESOURCE_EXHAUSTED for
a full queue, NOT_FOUND for an unknown job, UNIMPLEMENTED when async inference or callbacks are not
configured, UNAVAILABLE when Redis cannot be reached, INVALID_ARGUMENT for bad input).

A job is stored as a REST body (a JSON header and the binary tensor extension) whichever transport
submitted it, so one worker runs both; its result is the stored V2 JSON, turned back here into a
``ModelInferResponse`` with raw contents, as ``ModelInfer`` answers.
"""

import asyncio
from typing import Any

import numpy as np
import orjson

from serving_image.access_log import AccessLog
from serving_image.auth import Gate
from serving_image.dataplane import DataPlane, Target
from serving_image.datatypes import numpy_dtype
from serving_image.errors import InvalidInput, NotConfigured, ServingError
from serving_image.grpc_service import CallEnd, decode_request, encode_response, rpc_errors
from serving_image.grpc_wire import Call, Handler, Parser, RpcError
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
from serving_image.proto import async_inference_pb2 as jobs_pb
from serving_image.proto import grpc_predict_v2_pb2 as pb
from serving_image.rest_codec import serialize_tensor
from serving_image.settings import Settings
from serving_image.tensors import CALLBACK_PARAMETER, InferRequest, InferResponse, OutputTensor, TensorLimits
from serving_image.tracking import RequestTracker, Tracked

SERVICE = "/inference.jobs.AsyncInferenceService/"
NOT_CONFIGURED = "asynchronous inference is not configured"


class JobsServicer:
    """``SubmitInfer`` and ``GetJob`` over the job queue (None when async inference is off)."""

    def __init__(
        self, dataplane: DataPlane, tracker: RequestTracker, settings: Settings, jobs: JobQueue | None,
        job_log: AccessLog | None = None, callbacks: CallbackPolicy | None = None,
    ) -> None:  # fmt: skip
        self._dp = dataplane
        self._tracker = tracker
        self._gate = Gate.for_settings(settings)
        self._id_header = settings.request_id_header.lower()
        self._limits = TensorLimits(settings.max_tensor_rank, settings.max_tensor_elements)
        self._jobs = jobs
        self._job_log = job_log
        self._callbacks = callbacks
        self._store = None if jobs is None else jobs.store  # input_ref's store; None: references refused

    def methods(self) -> dict[str, tuple[Parser, Handler]]:
        """Each RPC's path, with the parser of its request message and its handler (registered even
        when async inference is off, so a client learns why: UNIMPLEMENTED with the reason)."""
        return {
            SERVICE + "SubmitInfer": (pb.ModelInferRequest.FromString, self.SubmitInfer),
            SERVICE + "GetJob": (jobs_pb.GetJobRequest.FromString, self.GetJob),
        }

    async def SubmitInfer(self, request: Any, call: Call) -> jobs_pb.JobTicket:  # noqa: N802
        """Queue the request as a job, checked first as a run would check it; one access-log line."""
        headers = call.metadata
        tracked = self._tracker.start(
            "grpc", headers.get(self._id_header), self._gate.caller(headers), headers
        )
        ended = CallEnd("accepted")
        try:
            with rpc_errors(call, ended):
                if self._gate.enabled and not call.cancelled:  # UNAUTHENTICATED or PERMISSION_DENIED
                    tracked.caller = (
                        await self._gate.authorize(headers, request.model_name, "infer")
                    ).subject
                if self._jobs is None:
                    raise NotConfigured(NOT_CONFIGURED)
                target = route_job(self._dp, request.model_name, request.model_version or None, headers)
                tracked.model, tracked.version = target.model.name, target.version.version
                tracked.assignment = target.assignment
                if call.cancelled:  # reset before it started: recorded under its model, not queued
                    raise asyncio.CancelledError
                job = self._checked_job(request, target, headers, tracked)
                job_id = await self._jobs.submit(job)
                log_submitted(self._job_log, job_id, job)
                call.trailing.append((b"x-model-version", tracked.version.encode("ascii", "replace")))
                return jobs_pb.JobTicket(id=job_id, status="pending", model_version=job.version)
        finally:
            self._tracker.finish(tracked, ended.status, ended.outcome, ended.error_name)

    async def GetJob(self, request: Any, call: Call) -> jobs_pb.Job:  # noqa: N802
        """The job's state, with the V2 response once done; only to the caller that submitted it."""
        try:
            if self._jobs is None:
                raise NotConfigured(NOT_CONFIGURED)
            job = await caller_job(self._jobs, self._gate, call.metadata, request.id)
            return job_message(job)
        except ServingError as error:
            raise RpcError(error.grpc_code, error.message) from None

    def _checked_job(self, request: Any, target: Target, headers: Any, tracked: Tracked) -> NewJob:
        """The job to queue: decoded as ModelInfer decodes it, then as the worker will (``decode_job``).

        The request id logged is the metadata's (``x-request-id``) or the server's, as for ModelInfer.
        """
        input_ref = None
        if INPUT_REF_PARAMETER in request.parameters:  # the request is an object in the store
            input_ref = self._input_ref(request)
            body, header_length = reference_body(request, input_ref), None
        else:
            decoded = decode_request(request, self._dp.input_specs(target), self._limits)
            body, header_length = job_body(decoded)
            decode_job(self._dp, target, body, header_length, self._limits)  # as the worker will decode it
        callback = requested_callback(headers.get(CALLBACK_HEADER), callback_parameter(request))
        return NewJob(
            model=target.model.name, version=target.version.version,
            version_requested=request.model_version or None, body=body, header_length=header_length,
            caller=tracked.caller, request_id=tracked.request_id,
            callback_url=None if callback is None else validate_callback_url(callback, self._callbacks),
            input_ref=input_ref,
        )  # fmt: skip

    def _input_ref(self, request: Any) -> str:
        """The request parameter ``input_ref`` (a ``string_param`` naming an object under the store's
        ``inputs/``), on a request without tensors: only the reference is checked now."""
        parameter = request.parameters[INPUT_REF_PARAMETER]
        is_string = parameter.WhichOneof("parameter_choice") == "string_param"
        input_ref = check_input_ref(self._store, parameter.string_param if is_string else None)
        for member in ("inputs", "raw_input_contents", "outputs"):
            if getattr(request, member):
                name = INPUT_REF_PARAMETER
                raise InvalidInput(f"a request with '{name}' has no {member}: the object it names holds them")
        return input_ref


def callback_parameter(request: Any) -> str | None:
    """The request parameter ``callback_url`` of a ModelInferRequest: a ``string_param``, or a 400."""
    if CALLBACK_PARAMETER not in request.parameters:
        return None
    parameter = request.parameters[CALLBACK_PARAMETER]
    if parameter.WhichOneof("parameter_choice") != "string_param":
        raise InvalidInput(f"request parameter '{CALLBACK_PARAMETER}' must be a string_param (a URL)")
    value: str = parameter.string_param
    return value


def job_body(request: InferRequest) -> tuple[bytes, int]:
    """The request as a REST body with binary tensor data (what the worker decodes), and its header's
    length: every input's raw bytes as the protocol's binary extension lays them out."""
    inputs: list[dict[str, object]] = []
    chunks: list[bytes] = []
    for tensor in request.inputs:
        raw = serialize_tensor(tensor.data)
        inputs.append({
            "name": tensor.name, "datatype": tensor.datatype, "shape": list(tensor.shape),
            "parameters": {"binary_data_size": len(raw)},
        })  # fmt: skip
        chunks.append(raw)
    header: dict[str, object] = {"inputs": inputs}
    if request.id is not None:
        header["id"] = request.id
    if request.outputs:
        header["outputs"] = [{"name": output.name} for output in request.outputs]
    head = orjson.dumps(header)
    return b"".join([head, *chunks]), len(head)


def reference_body(request: Any, input_ref: str) -> bytes:
    """The body queued for a job whose request is in the store: its id and the reference (the worker
    reads the request from the object; this is kept with a dead letter)."""
    header: dict[str, object] = {"parameters": {INPUT_REF_PARAMETER: input_ref}}
    if request.id:
        header["id"] = request.id
    return orjson.dumps(header)


def job_message(job: JobStatus) -> jobs_pb.Job:
    """A job's record as the ``Job`` message; a done job's stored V2 JSON as a ModelInferResponse."""
    message = jobs_pb.Job(
        id=job.id, status=job.state, model_name=job.model, model_version=job.version or "",
        version_requested=job.version_requested or "", attempts=job.attempts, error=job.error or "",
        created=iso_time(job.created) or "", started=iso_time(job.started) or "",
        finished=iso_time(job.finished) or "",
    )  # fmt: skip
    if job.state == "done" and job.result is not None:
        message.response.CopyFrom(response_message(job.result))
    if job.state == "done" and job.response_ref is not None:
        message.response_ref = job.response_ref
    if job.callback is not None:
        message.callback.CopyFrom(jobs_pb.JobCallback(
            url=job.callback.url, status=job.callback.status, attempts=job.callback.attempts or 0,
            detail=job.callback.detail or "",
        ))  # fmt: skip
    return message


def response_message(result: bytes) -> pb.ModelInferResponse:
    """A stored V2 response (JSON, every output as ``data``) as ModelInfer encodes a response."""
    document = orjson.loads(result)
    outputs = [
        OutputTensor(output["name"], output["datatype"], _output_array(output))
        for output in document["outputs"]
    ]
    response = InferResponse(document["model_name"], document["model_version"], outputs, document.get("id"))
    return encode_response(response)


def _output_array(output: dict[str, Any]) -> np.ndarray:
    """An output's flat JSON data in its shape (JSON has no NaN: numpy reads a float's null as NaN)."""
    return np.asarray(output["data"], dtype=numpy_dtype(output["datatype"])).reshape(output["shape"])
