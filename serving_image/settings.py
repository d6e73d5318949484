"""The server's settings: one object, read from ``SERVING_*`` variables and command-line flags."""

import argparse
import os
from collections.abc import Sequence
from pathlib import Path

from pydantic import Field, ValidationError
from pydantic_settings import BaseSettings, SettingsConfigDict

BUNDLED_MODELS = Path(__file__).resolve().parent / "models"


class Settings(BaseSettings):
    """Everything the server can be told; flags override ``SERVING_*`` environment variables."""

    model_config = SettingsConfigDict(
        env_prefix="SERVING_", frozen=True, extra="forbid", protected_namespaces=()
    )

    model_repository: Path = Field(default=BUNDLED_MODELS, description="Triton-layout model repository")
    host: str = Field(default="127.0.0.1", description="address to listen on")
    http_port: int = Field(default=8080, ge=0, le=65535, description="REST port (0 picks a free one)")
    grpc_port: int = Field(default=8081, ge=0, le=65535, description="gRPC port (0 picks a free one)")
    workers: int = Field(default=1, ge=1, le=64, description="server processes sharing the ports")
    max_request_bytes: int = Field(default=16 * 1024 * 1024, ge=1024, description="request size limit")
    grace_period_seconds: float = Field(default=20.0, ge=0, description="drain time after SIGTERM")
    caller_header: str = Field(default="x-jwt-sub", description="header naming the authenticated caller")
    request_id_header: str = Field(default="x-request-id", description="header carrying the request id")
    access_log: bool = Field(default=True, description="one JSON line per request on stdout")
    feedback_requests: int = Field(
        default=100_000, ge=1, description="served request ids remembered for feedback, per worker"
    )
    intra_op_threads: int = Field(default=0, ge=0, description="ONNX Runtime threads per model (0: auto)")

    def onnx_threads(self) -> int:
        """Threads per ONNX Runtime session: the cores shared out among the worker processes."""
        if self.intra_op_threads:
            return self.intra_op_threads
        return max(1, (os.cpu_count() or 1) // self.workers)


def build_parser() -> argparse.ArgumentParser:
    """The server's command line; every flag maps to a ``Settings`` field of the same name."""
    parser = argparse.ArgumentParser(
        prog="serving_image",
        description="ONNX Runtime server for the Open Inference Protocol (KServe V2) over REST and gRPC.",
    )
    parser.add_argument("--model-repository", type=Path, help="model repository (default: bundled models)")
    parser.add_argument("--host", help="address to listen on (default 127.0.0.1)")
    parser.add_argument("--http-port", type=int, help="REST port (default 8080)")
    parser.add_argument("--grpc-port", type=int, help="gRPC port (default 8081)")
    parser.add_argument("--workers", type=int, help="server processes sharing the ports (default 1)")
    parser.add_argument("--max-request-bytes", type=int, help="request size limit (default 16 MiB)")
    parser.add_argument("--grace-period-seconds", type=float, help="drain time after SIGTERM (default 20)")
    parser.add_argument(
        "--no-access-log", dest="access_log", action="store_false", default=None, help="no request log"
    )
    return parser


def load_settings(argv: Sequence[str] | None = None) -> Settings:
    """Settings from the environment and ``argv``; a bad value exits 2 naming the flag and the reason."""
    parser = build_parser()
    args = parser.parse_args(argv)
    overrides = {key: value for key, value in vars(args).items() if value is not None}
    try:
        return Settings(**overrides)
    except ValidationError as error:
        problems = "; ".join(
            f"{'.'.join(str(part) for part in issue['loc'])}: {issue['msg']}" for issue in error.errors()
        )
        parser.error(f"invalid setting: {problems}")
