"""The server's settings: one object, read from ``SERVING_*`` variables and command-line flags."""

import argparse
import importlib.util
import os
from collections.abc import Mapping, Sequence
from pathlib import Path

from pydantic import Field, ValidationError, ValidationInfo, field_validator, model_validator
from pydantic_core import ErrorDetails
from pydantic_settings import BaseSettings, SettingsConfigDict

from serving_image.object_store import parse_store_url
from serving_image.segments import check_header, parse_values

BUNDLED_MODELS = Path(__file__).resolve().parent / "models"

# SageMaker's inference container contract (docs/sagemaker.md): ``serve`` mode listens on all
# interfaces on 8080, or on the port SageMaker names, and serves the models SageMaker put in /opt/ml/model.
SERVE_MODE = "serve"
SAGEMAKER_MODEL_DIR = Path("/opt/ml/model")
SAGEMAKER_PORT_VARIABLE = "SAGEMAKER_BIND_TO_PORT"


class Settings(BaseSettings):
    """Everything the server can be told; flags override ``SERVING_*`` environment variables."""

    model_config = SettingsConfigDict(
        env_prefix="SERVING_", frozen=True, extra="forbid", protected_namespaces=()
    )

    model_repository: Path = Field(default=BUNDLED_MODELS, description="Triton-layout model repository")
    # SageMaker makes one Model per production variant from one version's files: /opt/ml/model is then
    # that version's directory (model.onnx at its top), and these two say what it serves as.
    model_name: str | None = Field(
        default=None, pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$",
        description="with model_version: the repository is one version's directory, served as this model",
    )  # fmt: skip
    model_version: str | None = Field(
        default=None, pattern=r"^[1-9][0-9]{0,17}$", description="with model_name: the version it serves as"
    )
    host: str = Field(default="127.0.0.1", description="address to listen on")
    http_port: int = Field(default=8080, ge=0, le=65535, description="REST port (0 picks a free one)")
    grpc_port: int = Field(default=8081, ge=0, le=65535, description="gRPC port (0 picks a free one)")
    workers: int = Field(default=1, ge=1, le=64, description="server processes sharing the ports")
    max_request_bytes: int = Field(default=16 * 1024 * 1024, ge=1024, description="request size limit")
    grace_period_seconds: float = Field(default=20.0, ge=0, description="drain time after SIGTERM")
    request_id_header: str = Field(default="x-request-id", description="header carrying the request id")
    access_log: bool = Field(default=True, description="one JSON line per request on stdout")
    feedback_requests: int = Field(
        default=100_000, ge=1, description="served request ids remembered for feedback, per worker"
    )
    intra_op_threads: int = Field(default=0, ge=0, description="ONNX Runtime threads per model (0: auto)")
    # Limits: each is checked before the work it guards, and each rejection names it.
    max_header_bytes: int = Field(
        default=16 * 1024, ge=1024, le=1024 * 1024, description="bytes of request header names and values"
    )
    max_header_count: int = Field(default=100, ge=8, le=10_000, description="request header fields")
    max_url_bytes: int = Field(default=8 * 1024, ge=256, le=1024 * 1024, description="request target bytes")
    max_request_id_length: int = Field(
        default=128, ge=8, le=1024, description="longer (or non [A-Za-z0-9._:-]) ids are replaced"
    )
    header_timeout_seconds: float = Field(
        default=10.0, gt=0, le=600, description="from connect (or a request's first byte) to its last header"
    )
    body_timeout_seconds: float = Field(
        default=30.0, gt=0, le=3600, description="from a request's last header to its last body byte"
    )
    idle_timeout_seconds: float = Field(
        default=30.0, gt=0, le=3600, description="keep-alive connections idle this long are closed"
    )
    max_connections: int = Field(
        default=1000, ge=1, le=1_000_000, description="open connections per worker, per transport"
    )
    max_streams_per_connection: int = Field(
        default=128, ge=1, le=65_536, description="concurrent gRPC calls on one HTTP/2 connection"
    )
    max_tensor_rank: int = Field(default=16, ge=1, le=32, description="dimensions of an input tensor")
    max_tensor_elements: int = Field(
        default=4 * 1024 * 1024, ge=1, le=1 << 40, description="elements of an input tensor"
    )
    # Drain and warm-up (serving_image/drain.py, runtime.OnnxModel.warm_up).
    drain_delay_seconds: float = Field(
        default=5.0, ge=0, le=3600,
        description="after SIGTERM, seconds the listeners keep accepting (inside the grace period)",
    )  # fmt: skip
    warm_up_every_batch_size_up_to: int = Field(
        default=64, ge=0, le=4096,
        description="warm up each batch size up to this, then the powers of two up to max_batch_size",
    )  # fmt: skip

    drift_sample_rate: float = Field(
        default=0.1, ge=0, le=1, description="share of requests whose rows are counted for drift (0: off)"
    )
    segment_header: str = Field(
        default="",
        description="request header naming the user segment (serving_image/segments.py; empty: off)",
    )
    segment_values: str = Field(
        default="", description="comma-separated segment values counted apart; any other value is 'other'"
    )
    trust_assignment_header: bool = Field(
        default=False,
        description="label requests with the assignment the mesh's route sets (x-variant-assignment); "
        "only behind the gateway, which overwrites what clients send",
    )

    def onnx_threads(self) -> int:
        """Threads per ONNX Runtime session: the cores shared out among the worker processes."""
        if self.intra_op_threads:
            return self.intra_op_threads
        return max(1, (os.cpu_count() or 1) // self.workers)

    # Authentication and authorisation (serving_image/auth.py, serving_image/jwks.py) and feedback limits.
    # Off by default: behind a mesh the gateway checks tokens. Standalone and SMB use set auth_mode=jwt.
    auth_mode: str = Field(default="off", pattern="^(off|jwt)$", description="off, or jwt: bearer JWTs")
    auth_jwks_url: str = Field(default="", description="the issuer's JWKS (https, or http to loopback)")
    auth_jwks_file: Path | None = Field(default=None, description="a local JWKS file instead (offline)")
    auth_issuer: str = Field(default="", description="the token issuer (iss) accepted")
    auth_audiences: str = Field(default="", description="comma-separated audiences (aud); one must match")
    auth_algorithms: str = Field(
        default="RS256,RS384,RS512,PS256,PS384,PS512,ES256,ES384,ES512,Ed25519,EdDSA",
        description="comma-separated signature algorithms accepted (asymmetric only)",
    )
    auth_scope_format: str = Field(
        default="models:{model}:{action}", description="the scope granting an action (infer, feedback, admin)"
    )
    auth_leeway_seconds: int = Field(default=30, ge=0, le=300, description="clock skew allowed on exp/nbf")
    auth_jwks_refresh_seconds: float = Field(
        default=300.0, gt=0, le=86_400, description="keys older than this are reloaded"
    )
    auth_jwks_min_refetch_seconds: float = Field(
        default=30.0, ge=0, le=3600, description="an unknown key id reloads the keys at most this often"
    )
    trusted_proxy_header: str = Field(
        default="", description="the caller header a trusted proxy in front sets; empty: none is believed"
    )
    # Per caller: an application backend that posts its users' outcomes is one caller, so the default leaves
    # room for it; forgery and replay are stopped by the once-per-id and same-caller checks, not by the rate.
    feedback_rate_per_second: float = Field(
        default=500.0, gt=0, le=1_000_000, description="feedback posts per second per caller"
    )
    feedback_burst: int = Field(default=1000, ge=1, le=1_000_000, description="feedback posts in a burst")

    @model_validator(mode="after")
    def _auth_complete(self) -> "Settings":
        if self.auth_mode != "jwt":
            return self
        if not self.auth_issuer or not self.auth_audiences.strip(", "):
            raise ValueError("auth_mode=jwt needs auth_issuer and auth_audiences")
        if bool(self.auth_jwks_url) == (self.auth_jwks_file is not None):
            raise ValueError("auth_mode=jwt needs exactly one of auth_jwks_url or auth_jwks_file")
        if "{model}" not in self.auth_scope_format or "{action}" not in self.auth_scope_format:
            raise ValueError("auth_scope_format must contain {model} and {action}")
        return self

    # TLS and the metrics port (serving_image/tls.py, serving_image/metrics.py). TLS is off unless a
    # certificate and key are given; then both ports speak only TLS (1.2 or later).
    tls_cert: Path | None = Field(default=None, description="PEM certificate chain for both ports (TLS on)")
    tls_key: Path | None = Field(default=None, description="PEM private key of --tls-cert, unencrypted")
    tls_client_ca: Path | None = Field(
        default=None, description="PEM CA bundle; set, clients must present a certificate it signed (mTLS)"
    )
    tls_reload_seconds: float = Field(
        default=10.0, ge=0, le=3600,
        description="how often the TLS files are checked for a new certificate (0: only on SIGHUP)",
    )  # fmt: skip
    metrics_port: int | None = Field(
        default=None, ge=0, le=65535,
        description="serve /metrics only on this plain-HTTP port (unset: on the REST port, as before)",
    )  # fmt: skip
    metrics_host: str = Field(default="", description="address of the metrics port (empty: the same as host)")

    @model_validator(mode="after")
    def _segments_valid(self) -> "Settings":
        check_header(self.segment_header)
        values = parse_values(self.segment_values)
        if bool(self.segment_header) != bool(values):
            raise ValueError("segment_header and segment_values go together: set both or neither")
        return self

    @model_validator(mode="after")
    def _tls_complete(self) -> "Settings":
        if (self.tls_cert is None) != (self.tls_key is None):
            raise ValueError("TLS needs both tls_cert and tls_key")
        if self.tls_client_ca is not None and self.tls_cert is None:
            raise ValueError("tls_client_ca (mutual TLS) needs tls_cert and tls_key")
        if self.metrics_port and self.metrics_port in (self.http_port, self.grpc_port):
            raise ValueError("metrics_port must differ from http_port and grpc_port")
        return self

    # Tracing and the response cache (serving_image/tracing.py, serving_image/response_cache.py).
    # Both off by default: no endpoint, no spans and no OpenTelemetry import; no bytes, no cache.
    otlp_endpoint: str = Field(
        default="", description="OTLP/gRPC collector for spans (http:// plaintext, https:// TLS); empty: off"
    )
    otlp_service_name: str = Field(default="model-serving", min_length=1, description="service.name of spans")
    otlp_sample_ratio: float = Field(
        default=1.0, ge=0, le=1, description="share of new traces sampled; a caller's decision is kept"
    )
    otlp_timeout_seconds: float = Field(default=10.0, gt=0, le=300, description="timeout of one span export")
    response_cache_bytes: int = Field(
        default=0, ge=0, le=1 << 40,
        description="bytes per model version for responses of models with response_cache: true; 0: off",
    )  # fmt: skip
    response_cache_entries: int = Field(
        default=10_000, ge=1, le=10_000_000, description="cached responses per model version"
    )

    # Entity-keyed requests (serving_image/features/online.py, docs/features.md): off unless a Feast
    # repository is given; then a version whose ONNX metadata names a feature_service also takes patient_id.
    feature_repo: Path | None = Field(
        default=None, description="Feast feature repository (a directory with feature_store.yaml); unset: off"
    )
    feature_timeout_ms: int = Field(
        default=50, ge=1, le=60_000, description="budget of a request's feature lookup; past it a 504"
    )
    feature_cache_entries: int = Field(
        default=10_000, ge=0, le=10_000_000, description="feature rows cached per process (0: no cache)"
    )
    feature_cache_ttl_seconds: float = Field(
        default=60.0, ge=0, le=86_400, description="a cached feature row is used this long (0: no cache)"
    )
    feature_registry_refresh_seconds: float = Field(
        default=60.0, gt=0, le=86_400, description="how often the registry and the freshness gauge are read"
    )

    @field_validator("feature_repo")
    @classmethod
    def _feature_repo(cls, repo: Path | None) -> Path | None:
        if repo is not None and not (repo / "feature_store.yaml").is_file():
            raise ValueError(f"{repo / 'feature_store.yaml'} is not a file (a Feast repository has one)")
        return repo

    # Asynchronous inference (serving_image/job_queue.py, job_worker.py, docs/async-inference.md): off
    # unless a Redis URL is given; then an async request is queued on a Redis Stream and answered 202.
    async_redis_url: str = Field(
        default="", pattern=r"^((rediss?|unix)://.+)?$",
        description="the job queue's Redis (redis://, rediss:// for TLS, unix://); empty: async off",
    )  # fmt: skip
    async_stream: str = Field(
        default="inference-jobs", pattern=r"^[A-Za-z0-9._:-]{1,128}$", description="the jobs' stream key"
    )
    async_max_queued: int = Field(
        default=100_000, ge=1, le=100_000_000, description="jobs waiting or running; a submit beyond is 429"
    )
    async_visibility_timeout_s: float = Field(
        default=60.0, gt=0, le=86_400,
        description="a job its worker has not finished after this long is delivered again",
    )  # fmt: skip
    async_max_attempts: int = Field(
        default=3, ge=1, le=100, description="deliveries of a job before it goes to the dead-letter stream"
    )
    async_result_ttl_s: int = Field(
        default=86_400, ge=1, le=30 * 86_400, description="a finished job's result is kept this long"
    )
    async_worker: bool = Field(default=False, description="this process also runs queued jobs")
    async_batch: int = Field(default=32, ge=1, le=4096, description="jobs a worker takes per read")
    async_callback_hosts: str = Field(
        default="", description="comma-separated hosts a job's callback may call; empty: no callbacks"
    )
    async_callback_secret_file: Path | None = Field(
        default=None, description="the HMAC key that signs callbacks, read from this file"
    )
    async_callback_max_attempts: int = Field(
        default=5, ge=1, le=20, description="POSTs of a job's callback before it is given up"
    )
    async_callback_backoff_s: float = Field(
        default=1.0,
        gt=0,
        le=60,
        description="the wait after a callback's first failed attempt; doubled each time",
    )
    async_callback_backoff_cap_s: float = Field(  # at least async_callback_backoff_s (below)
        default=60.0, le=3600, description="the longest wait between a callback's attempts"
    )
    async_callback_timeout_s: float = Field(
        default=10.0, gt=0, le=120, description="one callback attempt, from connecting to the answer's head"
    )

    # Object-store references (serving_image/object_store.py): a job's request may be an object in the
    # store (the request parameter input_ref), and a large result is written there instead of Redis.
    async_object_store: str = Field(
        default="",
        description="large job inputs and results: file:///abs/dir or s3://bucket/prefix; empty: none",
    )
    async_inline_result_bytes: int = Field(
        default=1 << 20, ge=0, le=1 << 26,
        description="a result larger than this is written to the object store (if set), not kept in Redis",
    )  # fmt: skip
    async_max_object_bytes: int = Field(
        default=256 << 20, ge=1024, le=1 << 32, description="the largest referenced input a worker reads"
    )

    @field_validator("async_object_store")
    @classmethod
    def _store_url(cls, url: str) -> str:
        if not url:
            return url
        location = parse_store_url(url)  # ValueError naming the problem
        if location.scheme == "s3" and importlib.util.find_spec("boto3") is None:
            raise ValueError("an s3:// store needs boto3 (the async-s3 extra)")
        return location.url

    @field_validator("async_callback_backoff_cap_s")
    @classmethod
    def _cap_covers_backoff(cls, cap: float, info: ValidationInfo) -> float:
        backoff = info.data.get("async_callback_backoff_s")  # absent when it was refused itself
        if backoff is not None and cap < backoff:
            raise ValueError(f"must be at least async_callback_backoff_s ({backoff:g})")
        return cap

    @model_validator(mode="after")
    def _one_version_complete(self) -> "Settings":
        if (self.model_name is None) != (self.model_version is None):
            raise ValueError(
                "model_name and model_version go together (one version's directory served as it)"
            )
        return self

    @model_validator(mode="after")
    def _async_complete(self) -> "Settings":
        if self.async_worker and not self.async_redis_url:
            raise ValueError("async_worker needs async_redis_url (the queue to consume)")
        if self.async_object_store and not self.async_redis_url:
            raise ValueError("async_object_store needs async_redis_url (references are for queued jobs)")
        if self.async_callback_hosts.strip(", ") and self.async_callback_secret_file is None:
            raise ValueError("async_callback_hosts needs async_callback_secret_file (callbacks are signed)")
        return self


# The limits also have command-line flags named after them (``--max-header-bytes``).
LIMITS = (
    "max_header_bytes", "max_header_count", "max_url_bytes", "max_request_id_length",
    "header_timeout_seconds", "body_timeout_seconds", "idle_timeout_seconds", "max_connections",
    "max_streams_per_connection", "max_tensor_rank", "max_tensor_elements",
)  # fmt: skip

# TLS and the metrics port have flags too (``--tls-cert``); the types argparse converts to.
TLS_AND_METRICS_FLAGS: tuple[tuple[str, type], ...] = (
    ("tls_cert", Path), ("tls_key", Path), ("tls_client_ca", Path), ("tls_reload_seconds", float),
    ("metrics_port", int), ("metrics_host", str),
)  # fmt: skip


def build_parser() -> argparse.ArgumentParser:
    """The server's command line; every flag maps to a ``Settings`` field of the same name."""
    parser = argparse.ArgumentParser(
        prog="serving_image",
        description="ONNX Runtime server for the Open Inference Protocol (KServe V2) over REST and gRPC.",
    )
    parser.add_argument(
        "mode", nargs="?", choices=(SERVE_MODE,),
        help=f"serve: SageMaker's container contract (0.0.0.0, port ${SAGEMAKER_PORT_VARIABLE} or 8080, "
        f"models in {SAGEMAKER_MODEL_DIR}, /ping and /invocations)",
    )  # fmt: skip
    parser.add_argument("--model-repository", type=Path, help="model repository (default: bundled models)")
    parser.add_argument("--host", help="address to listen on (default 127.0.0.1)")
    parser.add_argument("--http-port", type=int, help="REST port (default 8080)")
    parser.add_argument("--grpc-port", type=int, help="gRPC port (default 8081)")
    parser.add_argument("--workers", type=int, help="server processes sharing the ports (default 1)")
    parser.add_argument("--max-request-bytes", type=int, help="request size limit (default 16 MiB)")
    parser.add_argument("--grace-period-seconds", type=float, help="drain time after SIGTERM (default 20)")
    for name in LIMITS:
        field = Settings.model_fields[name]
        kind = float if field.annotation is float else int
        parser.add_argument(
            f"--{name.replace('_', '-')}", type=kind, help=f"{field.description} (default {field.default})"
        )
    parser.add_argument(
        "--no-access-log", dest="access_log", action="store_false", default=None, help="no request log"
    )
    for name, convert in TLS_AND_METRICS_FLAGS:  # serving_image/tls.py and the metrics port
        parser.add_argument(
            f"--{name.replace('_', '-')}", type=convert, help=Settings.model_fields[name].description
        )
    return parser


def _problem(issue: ErrorDetails) -> str:
    """One validation problem: `field: reason`, or the reason alone for a check across settings (it
    belongs to no one field); a check's own message without pydantic's "Value error, " prefix."""
    reason = str(issue["ctx"]["error"]) if issue["type"] == "value_error" else issue["msg"]
    # Every setting is a scalar, so a problem's location is one field name or none.
    return f"{issue['loc'][0]}: {reason}" if issue["loc"] else reason


def load_settings(argv: Sequence[str] | None = None) -> Settings:
    """Settings from the environment and ``argv``; a bad value exits 2 naming the flag and the reason."""
    parser = build_parser()
    args = parser.parse_args(argv)
    flags = {key: value for key, value in vars(args).items() if value is not None and key != "mode"}
    try:
        defaults = serve_defaults(os.environ) if args.mode == SERVE_MODE else {}
    except ValueError as error:
        parser.error(f"invalid setting: {error}")
    overrides = {**defaults, **flags}
    try:
        settings = Settings(**overrides)
    except ValidationError as error:
        parser.error(f"invalid setting: {'; '.join(_problem(issue) for issue in error.errors())}")
    # The token verifier checks the algorithms, the JWKS URL and a JWKS file now, so a bad value is the
    # same one-line exit 2 as any other setting rather than a traceback at start-up.
    from serving_image.auth import build_verifier

    try:
        build_verifier(settings)
    except (ValueError, OSError) as error:
        parser.error(f"invalid setting: auth: {error}")
    # Likewise the callbacks' allowed hosts and key file (serving_image/job_callbacks.py).
    if settings.async_callback_hosts.strip(", "):
        from serving_image.job_callbacks import CallbackPolicy

        try:
            CallbackPolicy.for_settings(settings)
        except ValueError as error:
            parser.error(f"invalid setting: callbacks: {error}")
    return settings


def serve_defaults(environ: Mapping[str, str]) -> dict[str, object]:
    """The settings ``serve`` mode changes: its defaults where no ``SERVING_*`` variable is set, and
    the port SageMaker names in ``SAGEMAKER_BIND_TO_PORT`` (a flag still overrides both)."""
    contract: dict[str, object] = {
        "model_repository": SAGEMAKER_MODEL_DIR,
        "host": "0.0.0.0",  # noqa: S104 - the contract: SageMaker reaches the container from outside
        "http_port": 8080,
    }
    present = {name.upper() for name in environ}  # the variables are read regardless of case
    chosen = {name: value for name, value in contract.items() if f"SERVING_{name.upper()}" not in present}
    port = environ.get(SAGEMAKER_PORT_VARIABLE)
    if port is not None:
        if not (port.isascii() and port.isdigit() and 0 < int(port) <= 65535):
            raise ValueError(f"{SAGEMAKER_PORT_VARIABLE}: must be a port number (1-65535), got {port!r}")
        chosen["http_port"] = int(port)
    return chosen
