"""The V2 gRPC service, ``inference.GRPCInferenceService``: its six RPCs over the data plane.

The calls arrive through ``serving_image.grpc_connection`` (gRPC over HTTP/2), which parses each
request message with the parser of ``methods()`` and sends back what a handler returns, or the
status of the ``RpcError`` it raises."""

import asyncio
import contextlib
import sys
import traceback
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from serving_image.auth import Gate
from serving_image.dataplane import DataPlane
from serving_image.errors import InvalidInput, ServingError
from serving_image.grpc_wire import STATUS_CODES, Call, Handler, Parser, RpcError
from serving_image.proto import grpc_predict_v2_pb2 as pb
from serving_image.rest_codec import array_from_bytes, serialize_tensor
from serving_image.runtime import TensorSpec
from serving_image.settings import Settings
from serving_image.shadow import ShadowTraffic
from serving_image.tensors import (
    DEFAULT_LIMITS,
    InferRequest,
    InferResponse,
    InputTensor,
    RequestedOutput,
    TensorLimits,
    array_from_list,
    check_against_spec,
    check_shape,
)
from serving_image.tracking import RequestTracker

# The request span (serving_image/tracing.py), after OpenTelemetry's RPC conventions; the codes that
# mark a server span as failed are the server's faults, not the client's.
_SPAN_NAME = "inference.GRPCInferenceService/ModelInfer"
_SPAN_START = {
    "rpc.system": "grpc", "rpc.service": "inference.GRPCInferenceService", "rpc.method": "ModelInfer",
}  # fmt: skip
_SERVER_FAULTS = frozenset(
    {"UNKNOWN", "DEADLINE_EXCEEDED", "UNIMPLEMENTED", "INTERNAL", "UNAVAILABLE", "DATA_LOSS"}
)

# Which InferTensorContents field carries each datatype when tensors are not sent raw.
_CONTENTS_FIELD = {
    "BOOL": "bool_contents",
    "INT8": "int_contents",
    "INT16": "int_contents",
    "INT32": "int_contents",
    "INT64": "int64_contents",
    "UINT8": "uint_contents",
    "UINT16": "uint_contents",
    "UINT32": "uint_contents",
    "UINT64": "uint64_contents",
    "FP32": "fp32_contents",
    "FP64": "fp64_contents",
    "BYTES": "bytes_contents",
}


_SERVICE = "/inference.GRPCInferenceService/"


class InferenceServicer:
    """The protocol's six RPCs over the data plane."""

    def __init__(
        self, dataplane: DataPlane, tracker: RequestTracker, shadow: ShadowTraffic, settings: Settings
    ) -> None:
        self._dp = dataplane
        self._shadow = shadow
        self._tracker = tracker
        # Auth (serving_image/auth.py): the logged caller is a verified token's or a trusted proxy's.
        self._gate = Gate.for_settings(settings)
        self._id_header = settings.request_id_header.lower()
        self._tensor_limits = TensorLimits(settings.max_tensor_rank, settings.max_tensor_elements)
        self._tracing = dataplane.tracing  # serving_image/tracing.py; None when off

    def methods(self) -> dict[str, tuple[Parser, Handler]]:
        """Each RPC's path, with the parser of its request message and its handler."""
        return {
            _SERVICE + "ServerLive": (pb.ServerLiveRequest.FromString, self.ServerLive),
            _SERVICE + "ServerReady": (pb.ServerReadyRequest.FromString, self.ServerReady),
            _SERVICE + "ModelReady": (pb.ModelReadyRequest.FromString, self.ModelReady),
            _SERVICE + "ServerMetadata": (pb.ServerMetadataRequest.FromString, self.ServerMetadata),
            _SERVICE + "ModelMetadata": (pb.ModelMetadataRequest.FromString, self.ModelMetadata),
            _SERVICE + "ModelInfer": (pb.ModelInferRequest.FromString, self.ModelInfer),
        }

    async def ServerLive(self, request: Any, call: Call) -> pb.ServerLiveResponse:  # noqa: N802
        return pb.ServerLiveResponse(live=self._dp.live())

    async def ServerReady(self, request: Any, call: Call) -> pb.ServerReadyResponse:  # noqa: N802
        return pb.ServerReadyResponse(ready=self._dp.ready())

    async def ModelReady(self, request: Any, call: Call) -> pb.ModelReadyResponse:  # noqa: N802
        try:
            return pb.ModelReadyResponse(ready=self._dp.model_ready(request.name, request.version or None))
        except ServingError as error:
            raise RpcError(error.grpc_code, error.message) from None

    async def ServerMetadata(self, request: Any, call: Call) -> pb.ServerMetadataResponse:  # noqa: N802
        meta = self._dp.server_metadata()
        return pb.ServerMetadataResponse(
            name=str(meta["name"]),
            version=str(meta["version"]),
            extensions=list(meta["extensions"]),  # type: ignore[call-overload]
        )

    async def ModelMetadata(self, request: Any, call: Call) -> pb.ModelMetadataResponse:  # noqa: N802
        try:
            meta = self._dp.model_metadata(request.name, request.version or None)
        except ServingError as error:
            raise RpcError(error.grpc_code, error.message) from None
        tensor = pb.ModelMetadataResponse.TensorMetadata
        return pb.ModelMetadataResponse(
            name=meta.name,
            versions=meta.versions,
            platform=meta.platform,
            inputs=[tensor(name=s.name, datatype=s.datatype, shape=s.shape) for s in meta.inputs],
            outputs=[tensor(name=s.name, datatype=s.datatype, shape=s.shape) for s in meta.outputs],
        )

    async def ModelInfer(self, request: Any, call: Call) -> pb.ModelInferResponse:  # noqa: N802
        headers = call.metadata
        tracked = self._tracker.start(
            "grpc", headers.get(self._id_header), self._gate.caller(headers), headers
        )
        tracing = self._tracing
        span = None if tracing is None else tracing.start_request(_SPAN_NAME, headers, _SPAN_START)
        ended = CallEnd("success")
        try:
            with rpc_errors(call, ended):
                if self._gate.enabled and not call.cancelled:  # UNAUTHENTICATED or PERMISSION_DENIED
                    tracked.caller = (
                        await self._gate.authorize(headers, request.model_name, "infer")
                    ).subject
                target = self._dp.route(request.model_name, request.model_version or None, headers)
                tracked.model, tracked.version = target.model.name, target.version.version
                tracked.assignment = target.assignment
                if call.cancelled:  # reset before it started: recorded under its model, not run
                    raise asyncio.CancelledError
                decoded = decode_request(request, self._dp.input_specs(target), self._tensor_limits)
                self._shadow.mirror(target, decoded)
                response = await self._dp.infer(target, decoded, span)
                if tracked.minted:  # only the server's own ids are kept for feedback
                    self._dp.remember(tracked.request_id, target, tracked.caller, response)
                # Trailing metadata rides along with the status: no extra send, unlike initial metadata.
                call.trailing.append((b"x-model-version", tracked.version.encode("ascii", "replace")))
                return encode_response(response)
        finally:
            self._tracker.finish(tracked, ended.status, ended.outcome, ended.error_name)
            if span is not None and tracing is not None:
                code = {"rpc.grpc.status_code": STATUS_CODES[ended.status]}
                tracing.end_request(span, tracked, ended.outcome, code, failed=ended.status in _SERVER_FAULTS)


@dataclass(slots=True)
class CallEnd:
    """How a tracked call ended, for its access-log line: gRPC status, outcome, error class name."""

    outcome: str
    status: str = "OK"
    error_name: str | None = None


@contextlib.contextmanager
def rpc_errors(call: Call, ended: CallEnd) -> Iterator[None]:
    """The one mapping of what a tracked RPC raises to its answer, recorded in ``ended``: a ServingError to
    its gRPC status and message; a reset or passed deadline to CANCELLED or DEADLINE_EXCEEDED (re-raised,
    nothing is sent); anything else, a bug, to INTERNAL with its traceback on stderr, and serving goes on."""
    try:
        yield
    except ServingError as error:
        ended.status, ended.outcome, ended.error_name = error.grpc_code, error.outcome, type(error).__name__
        raise RpcError(error.grpc_code, error.message) from None
    except asyncio.CancelledError:  # the client reset the call, or its deadline passed
        ended.status = "DEADLINE_EXCEEDED" if call.timed_out else "CANCELLED"
        ended.outcome, ended.error_name = "client_error", "Cancelled"
        raise
    except Exception:  # a bug: answer INTERNAL, keep serving, and leave a trace for the operator
        traceback.print_exc(file=sys.stderr)
        ended.status, ended.outcome, ended.error_name = "INTERNAL", "server_error", "InternalError"
        raise RpcError("INTERNAL", "internal server error") from None


def decode_request(
    request: Any, specs: Mapping[str, TensorSpec] | None = None, limits: TensorLimits = DEFAULT_LIMITS
) -> InferRequest:
    """A ModelInferRequest as a protocol-neutral request; raw contents or typed contents.

    With the model's input ``specs``, each input's name, datatype and shape are checked
    against them (and against ``limits``) before any of its data is converted.
    """
    raw = request.raw_input_contents
    if raw and len(raw) != len(request.inputs):
        raise InvalidInput(f"{len(raw)} raw_input_contents for {len(request.inputs)} inputs")
    inputs = []
    for index, tensor in enumerate(request.inputs):
        if raw and tensor.HasField("contents"):
            raise InvalidInput(f"input '{tensor.name}': send 'contents' or raw_input_contents, not both")
        shape = check_shape(list(tensor.shape), tensor.name, limits)
        if specs is not None:
            spec = specs.get(tensor.name)
            if spec is None:
                raise InvalidInput(f"unknown input '{tensor.name}'; the model's inputs are {sorted(specs)}")
            check_against_spec(tensor.name, tensor.datatype, shape, spec)
        if raw:
            data = array_from_bytes(tensor.name, tensor.datatype, shape, raw[index])
        else:
            data = _from_contents(tensor, shape)
        inputs.append(InputTensor(tensor.name, tensor.datatype, shape, data))
    outputs = [RequestedOutput(output.name) for output in request.outputs] or None
    return InferRequest(
        model=request.model_name,
        version=request.model_version or None,
        inputs=inputs,
        id=request.id or None,
        outputs=outputs,
    )


def _from_contents(tensor: Any, shape: tuple[int, ...]) -> np.ndarray:
    field = _CONTENTS_FIELD.get(tensor.datatype)
    if field is None:
        raise InvalidInput(
            f"input '{tensor.name}': datatype '{tensor.datatype}' must be sent as raw contents"
        )
    values = list(getattr(tensor.contents, field))
    if tensor.datatype == "BYTES":
        values = [value.decode("utf-8", "replace") for value in values]
    return array_from_list(tensor.name, tensor.datatype, shape, values)


def encode_response(response: InferResponse) -> pb.ModelInferResponse:
    """Outputs as raw little-endian contents, as Triton and its clients expect."""
    message = pb.ModelInferResponse(model_name=response.model, model_version=response.version)
    if response.id:
        message.id = response.id
    for output in response.outputs:
        message.outputs.add(name=output.name, datatype=output.datatype, shape=list(output.data.shape))
        message.raw_output_contents.append(serialize_tensor(output.data))
    return message
