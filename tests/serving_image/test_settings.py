"""The server's settings, in-process: defaults, every bounded variable at its bounds, the flags, and exit 2.

``load_settings`` is what ``python -m serving_image`` runs first; a bad value must stop the
server with one line naming the setting and the reason, before anything listens.
"""

import argparse
import importlib.util
import os
import re
import sys
from pathlib import Path

import annotated_types
import pytest

from serving_image.settings import (
    BUNDLED_MODELS,
    LIMITS,
    SAGEMAKER_MODEL_DIR,
    Settings,
    build_parser,
    load_settings,
)

PROG = "serving_image"
# What `python -m serving_image` puts in sys.argv[0]; argparse would name the program after it.
MAIN = "/srv/app/serving_image/__main__.py"


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """No ``SERVING_*`` variable of the calling shell leaks in, and ``sys.argv`` holds no flags."""
    for name in list(os.environ):
        if name.startswith("SERVING_"):
            monkeypatch.delenv(name)
    monkeypatch.delenv("SAGEMAKER_BIND_TO_PORT", raising=False)
    monkeypatch.setattr(sys, "argv", [MAIN])


def refused(capsys: pytest.CaptureFixture[str], argv: list[str]) -> str:
    """The one error line of a ``load_settings`` that must exit 2."""
    with pytest.raises(SystemExit) as raised:
        load_settings(argv)
    assert raised.value.code == 2, f"a bad setting exits 2, not {raised.value.code}"
    lines = capsys.readouterr().err.strip().splitlines()
    assert lines[0].startswith(f"usage: {PROG} "), lines
    return lines[-1]


# --- defaults -----------------------------------------------------------------------------------------------

DEFAULTS: dict[str, object] = {
    "model_repository": BUNDLED_MODELS,
    "model_name": None,
    "model_version": None,
    "host": "127.0.0.1",
    "http_port": 8080,
    "grpc_port": 8081,
    "workers": 1,
    "max_request_bytes": 16 * 1024 * 1024,
    "grace_period_seconds": 20.0,
    "request_id_header": "x-request-id",
    "access_log": True,
    "feedback_requests": 100_000,
    "intra_op_threads": 0,
    "max_header_bytes": 16 * 1024,
    "max_header_count": 100,
    "max_url_bytes": 8 * 1024,
    "max_request_id_length": 128,
    "header_timeout_seconds": 10.0,
    "body_timeout_seconds": 30.0,
    "idle_timeout_seconds": 30.0,
    "max_connections": 1000,
    "max_streams_per_connection": 128,
    "max_tensor_rank": 16,
    "max_tensor_elements": 4 * 1024 * 1024,
    "drain_delay_seconds": 5.0,
    "warm_up_every_batch_size_up_to": 64,
    "drift_sample_rate": 0.1,
    "segment_header": "",
    "segment_values": "",
    "trust_assignment_header": False,
    "auth_mode": "off",
    "auth_jwks_url": "",
    "auth_jwks_file": None,
    "auth_issuer": "",
    "auth_audiences": "",
    "auth_algorithms": "RS256,RS384,RS512,PS256,PS384,PS512,ES256,ES384,ES512,Ed25519,EdDSA",
    "auth_scope_format": "models:{model}:{action}",
    "auth_leeway_seconds": 30,
    "auth_jwks_refresh_seconds": 300.0,
    "auth_jwks_min_refetch_seconds": 30.0,
    "trusted_proxy_header": "",
    "feedback_rate_per_second": 500.0,
    "feedback_burst": 1000,
    "tls_cert": None,
    "tls_key": None,
    "tls_client_ca": None,
    "tls_reload_seconds": 10.0,
    "metrics_port": None,
    "metrics_host": "",
    "otlp_endpoint": "",
    "otlp_service_name": "model-serving",
    "otlp_sample_ratio": 1.0,
    "otlp_timeout_seconds": 10.0,
    "response_cache_bytes": 0,
    "response_cache_entries": 10_000,
    "async_redis_url": "",
    "async_stream": "inference-jobs",
    "async_max_queued": 100_000,
    "async_visibility_timeout_s": 60.0,
    "async_max_attempts": 3,
    "async_result_ttl_s": 86_400,
    "async_worker": False,
    "async_batch": 32,
    "async_callback_hosts": "",
    "async_callback_secret_file": None,
    "async_callback_max_attempts": 5,
    "async_callback_backoff_s": 1.0,
    "async_callback_backoff_cap_s": 60.0,
    "async_callback_timeout_s": 10.0,
    "async_object_store": "",
    "async_inline_result_bytes": 1024 * 1024,
    "async_max_object_bytes": 256 * 1024 * 1024,
    "feature_repo": None,
    "feature_timeout_ms": 50,
    "feature_cache_entries": 10_000,
    "feature_cache_ttl_seconds": 60.0,
    "feature_registry_refresh_seconds": 60.0,
}


def test_every_setting_has_its_documented_default() -> None:
    assert set(DEFAULTS) == set(Settings.model_fields), "a setting was added or removed: add its default here"
    settings = load_settings([])
    assert settings.model_dump() == DEFAULTS


def test_every_setting_is_a_scalar_so_an_error_names_one_field() -> None:
    # tests/mutation/equivalent.toml relies on this: an error's location is one field name, or none.
    scalars = {int, float, str, bool, Path, Path | None, int | None, str | None}
    nested = {
        name: field.annotation
        for name, field in Settings.model_fields.items()
        if field.annotation not in scalars
    }
    assert not nested, f"a nested setting needs its dotted location tested in load_settings: {nested}"


def test_no_debug_switch_is_on_by_default() -> None:
    settings = load_settings([])
    off = (settings.auth_mode, settings.tls_cert, settings.otlp_endpoint, settings.response_cache_bytes)
    assert off == ("off", None, "", 0), "auth, TLS, tracing and the response cache are opt-in"
    jobs = (settings.async_redis_url, settings.async_worker, settings.async_callback_hosts)
    assert jobs == ("", False, ""), "asynchronous inference, its worker and callbacks are opt-in"
    assert settings.host == "127.0.0.1", "the default listens on loopback only"


# --- every bounded variable at its bounds, both ways --------------------------------------------------------


def ge(bound: object) -> str:
    return f"Input should be greater than or equal to {bound}"


def gt(bound: object) -> str:
    return f"Input should be greater than {bound}"


def le(bound: object) -> str:
    return f"Input should be less than or equal to {bound}"


# field: (lowest accepted, the value just under it, its reason, highest accepted, just over it, its reason).
# A setting with no upper bound has None there, and a very large value is shown accepted.
BOUNDS: dict[str, tuple[str, str, str, str, str | None, str | None]] = {
    "http_port": ("0", "-1", ge(0), "65535", "65536", le(65535)),
    "grpc_port": ("0", "-1", ge(0), "65535", "65536", le(65535)),
    "workers": ("1", "0", ge(1), "64", "65", le(64)),
    "max_request_bytes": ("1024", "1023", ge(1024), str(1 << 40), None, None),
    "grace_period_seconds": ("0", "-0.001", ge(0), "1e9", None, None),
    "feedback_requests": ("1", "0", ge(1), str(1 << 40), None, None),
    "intra_op_threads": ("0", "-1", ge(0), "4096", None, None),
    "max_header_bytes": ("1024", "1023", ge(1024), "1048576", "1048577", le(1048576)),
    "max_header_count": ("8", "7", ge(8), "10000", "10001", le(10000)),
    "max_url_bytes": ("256", "255", ge(256), "1048576", "1048577", le(1048576)),
    "max_request_id_length": ("8", "7", ge(8), "1024", "1025", le(1024)),
    "header_timeout_seconds": ("0.001", "0", gt(0), "600", "600.001", le(600)),
    "body_timeout_seconds": ("0.001", "0", gt(0), "3600", "3600.001", le(3600)),
    "idle_timeout_seconds": ("0.001", "0", gt(0), "3600", "3600.001", le(3600)),
    "max_connections": ("1", "0", ge(1), "1000000", "1000001", le(1000000)),
    "max_streams_per_connection": ("1", "0", ge(1), "65536", "65537", le(65536)),
    "max_tensor_rank": ("1", "0", ge(1), "32", "33", le(32)),
    "max_tensor_elements": ("1", "0", ge(1), str(1 << 40), str((1 << 40) + 1), le(1 << 40)),
    "drain_delay_seconds": ("0", "-0.001", ge(0), "3600", "3600.001", le(3600)),
    "warm_up_every_batch_size_up_to": ("0", "-1", ge(0), "4096", "4097", le(4096)),
    "drift_sample_rate": ("0", "-0.001", ge(0), "1", "1.001", le(1)),
    "auth_leeway_seconds": ("0", "-1", ge(0), "300", "301", le(300)),
    "auth_jwks_refresh_seconds": ("0.001", "0", gt(0), "86400", "86400.001", le(86400)),
    "auth_jwks_min_refetch_seconds": ("0", "-0.001", ge(0), "3600", "3600.001", le(3600)),
    "feedback_rate_per_second": ("0.001", "0", gt(0), "1000000", "1000000.001", le(1000000)),
    "feedback_burst": ("1", "0", ge(1), "1000000", "1000001", le(1000000)),
    "tls_reload_seconds": ("0", "-0.001", ge(0), "3600", "3600.001", le(3600)),
    "metrics_port": ("0", "-1", ge(0), "65535", "65536", le(65535)),
    "otlp_sample_ratio": ("0", "-0.001", ge(0), "1", "1.001", le(1)),
    "otlp_timeout_seconds": ("0.001", "0", gt(0), "300", "300.001", le(300)),
    "response_cache_bytes": ("0", "-1", ge(0), str(1 << 40), str((1 << 40) + 1), le(1 << 40)),
    "response_cache_entries": ("1", "0", ge(1), "10000000", "10000001", le(10000000)),
    "async_max_queued": ("1", "0", ge(1), "100000000", "100000001", le(100000000)),
    "async_visibility_timeout_s": ("0.001", "0", gt(0), "86400", "86400.001", le(86400)),
    "async_max_attempts": ("1", "0", ge(1), "100", "101", le(100)),
    "async_result_ttl_s": ("1", "0", ge(1), "2592000", "2592001", le(2592000)),
    "async_batch": ("1", "0", ge(1), "4096", "4097", le(4096)),
    "async_callback_max_attempts": ("1", "0", ge(1), "20", "21", le(20)),
    "async_callback_backoff_s": ("0.001", "0", gt(0), "60", "60.001", le(60)),
    # Its lower bound is async_callback_backoff_s (1 by default); see the test of the two together.
    "async_callback_backoff_cap_s": (
        "1",
        "0.999",
        "must be at least async_callback_backoff_s (1)",
        "3600",
        "3600.001",
        le(3600),
    ),
    "async_callback_timeout_s": ("0.001", "0", gt(0), "120", "120.001", le(120)),
    "async_inline_result_bytes": ("0", "-1", ge(0), str(1 << 26), str((1 << 26) + 1), le(1 << 26)),
    "async_max_object_bytes": ("1024", "1023", ge(1024), str(1 << 32), str((1 << 32) + 1), le(1 << 32)),
    "feature_timeout_ms": ("1", "0", ge(1), "60000", "60001", le(60000)),
    "feature_cache_entries": ("0", "-1", ge(0), "10000000", "10000001", le(10000000)),
    "feature_cache_ttl_seconds": ("0", "-0.001", ge(0), "86400", "86400.001", le(86400)),
    "feature_registry_refresh_seconds": ("0.001", "0", gt(0), "86400", "86400.001", le(86400)),
}
NUMERIC_CONSTRAINTS = (annotated_types.Ge, annotated_types.Gt, annotated_types.Le, annotated_types.Lt)


def variable(field: str) -> str:
    return "SERVING_" + field.upper()


def parsed(field: str, text: str) -> object:
    """What ``text`` means for ``field``: an int field takes ints, a float field floats."""
    return float(text) if Settings.model_fields[field].annotation is float else int(text)


def test_every_bounded_setting_is_in_the_bounds_table() -> None:
    bounded = {
        name
        for name, field in Settings.model_fields.items()
        if any(isinstance(rule, NUMERIC_CONSTRAINTS) for rule in field.metadata)
    }
    assert bounded == set(BOUNDS), "a bounded setting was added or removed: add its bounds here"


@pytest.mark.parametrize("field", sorted(BOUNDS))
def test_a_variable_at_its_bounds_is_accepted(monkeypatch: pytest.MonkeyPatch, field: str) -> None:
    lowest, _, _, highest, _, _ = BOUNDS[field]
    for text in (lowest, highest):
        monkeypatch.setenv(variable(field), text)
        value = getattr(load_settings([]), field)
        assert value == parsed(field, text), f"{variable(field)}={text} must give {text}, got {value}"


@pytest.mark.parametrize(
    ("field", "side"),
    [
        (field, side)
        for field in sorted(BOUNDS)
        for side in ("under", "over")
        if BOUNDS[field][4] or side == "under"
    ],
)
def test_a_variable_past_a_bound_exits_2_naming_the_setting_and_the_bound(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], field: str, side: str
) -> None:
    _, under, under_reason, _, over, over_reason = BOUNDS[field]
    text, reason = (under, under_reason) if side == "under" else (over, over_reason)
    assert text is not None
    monkeypatch.setenv(variable(field), text)
    line = refused(capsys, [])
    assert line == f"{PROG}: error: invalid setting: {field}: {reason}", f"{variable(field)}={text}: {line}"


# The object store's URL (serving_image/object_store.py): each problem is named.
STORE_URLS_REFUSED = (
    ("http://bucket/jobs", "must be file:///<absolute directory> or s3://<bucket>/<prefix>"),
    ("/srv/store", "must be file:///<absolute directory> or s3://<bucket>/<prefix>"),
    ("file://host/srv/store", "a file:// store names no host: file:///<absolute directory>"),
    ("file:///", "the directory must not be /"),
    ("file:///srv/../etc", "the directory's path has an empty, '.' or '..' segment"),
    ("file:///srv//store", "the directory's path has an empty, '.' or '..' segment"),
    ("file:///srv/my store", "must be printable ASCII without spaces"),
    ("file:///srv/st\u00f6re", "must be printable ASCII without spaces"),
    ("s3://Bad_Bucket/jobs", "'Bad_Bucket' is not an S3 bucket name"),
    ("s3://ab/jobs", "'ab' is not an S3 bucket name"),
    ("s3://-bucket/jobs", "'-bucket' is not an S3 bucket name"),
    ("s3://bucket/jobs//m", "the prefix has an empty, '.' or '..' segment"),
    ("s3://bucket/jobs/../m", "the prefix has an empty, '.' or '..' segment"),
    ("s3://bucket/jobs?versionId=1", "must have no query or fragment"),
    ("file:///srv/store#x", "must have no query or fragment"),
)


@pytest.mark.parametrize(
    ("field", "text", "reason"),
    [
        ("http_port", "lots", "Input should be a valid integer, unable to parse string as an integer"),
        ("workers", "1.5", "Input should be a valid integer, unable to parse string as an integer"),
        (
            "grace_period_seconds",
            "soon",
            "Input should be a valid number, unable to parse string as a number",
        ),
        ("access_log", "maybe", "Input should be a valid boolean, unable to interpret input"),
        ("auth_mode", "basic", "String should match pattern '^(off|jwt)$'"),
        ("otlp_service_name", "", "String should have at least 1 character"),
        ("metrics_port", "ninety", "Input should be a valid integer, unable to parse string as an integer"),
        ("async_redis_url", "http://cache:6379", "String should match pattern '^((rediss?|unix)://.+)?$'"),
        ("async_redis_url", "redis://", "String should match pattern '^((rediss?|unix)://.+)?$'"),
        ("async_stream", "", "String should match pattern '^[A-Za-z0-9._:-]{1,128}$'"),
        ("async_stream", "jobs and more", "String should match pattern '^[A-Za-z0-9._:-]{1,128}$'"),
        ("async_stream", "j" * 129, "String should match pattern '^[A-Za-z0-9._:-]{1,128}$'"),
        ("async_worker", "maybe", "Input should be a valid boolean, unable to interpret input"),
        (
            "async_max_attempts",
            "2.5",
            "Input should be a valid integer, unable to parse string as an integer",
        ),
        *(("async_object_store", url, reason) for url, reason in STORE_URLS_REFUSED),
        *(
            ("model_name", name, "String should match pattern '^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$'")
            for name in ("", "../etc", "a/b", ".hidden", "m" * 129)
        ),
        *(
            ("model_version", version, "String should match pattern '^[1-9][0-9]{0,17}$'")
            for version in ("0", "01", "v1", "1.0", "", "1" * 19)
        ),
    ],
)
def test_a_variable_of_the_wrong_kind_exits_2_naming_the_setting_and_the_reason(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], field: str, text: str, reason: str
) -> None:
    monkeypatch.setenv(variable(field), text)
    line = refused(capsys, [])
    assert line == f"{PROG}: error: invalid setting: {field}: {reason}", line


@pytest.mark.parametrize(
    ("text", "value"),
    [("false", False), ("0", False), ("no", False), ("true", True), ("1", True), ("yes", True)],
)
def test_the_access_log_variable_reads_both_ways(
    monkeypatch: pytest.MonkeyPatch, text: str, value: bool
) -> None:
    monkeypatch.setenv("SERVING_ACCESS_LOG", text)
    assert load_settings([]).access_log is value, f"SERVING_ACCESS_LOG={text}"


@pytest.mark.parametrize(
    ("field", "text", "value"),
    [
        ("model_repository", "/srv/models", Path("/srv/models")),
        ("host", "0.0.0.0", "0.0.0.0"),
        ("request_id_header", "x-correlation-id", "x-correlation-id"),
        ("auth_jwks_file", "/etc/jwks.json", Path("/etc/jwks.json")),
        ("trusted_proxy_header", "x-caller", "x-caller"),
        ("metrics_host", "10.0.0.1", "10.0.0.1"),
        ("otlp_endpoint", "http://collector:4317", "http://collector:4317"),
        ("otlp_service_name", "m", "m"),
        ("async_redis_url", "rediss://:token@cache.internal:6379/0", "rediss://:token@cache.internal:6379/0"),
        ("async_redis_url", "unix:///run/redis.sock", "unix:///run/redis.sock"),
        ("async_stream", "jobs:tabular-classifier.v1", "jobs:tabular-classifier.v1"),
        ("async_stream", "j" * 128, "j" * 128),
        ("async_callback_secret_file", "/run/secrets/callback-hmac", Path("/run/secrets/callback-hmac")),
    ],
)
def test_a_text_or_path_variable_is_read_as_given(
    monkeypatch: pytest.MonkeyPatch, field: str, text: str, value: object
) -> None:
    monkeypatch.setenv(variable(field), text)
    assert getattr(load_settings([]), field) == value, f"{variable(field)}={text}"


def test_a_feature_repo_needs_its_feature_store_yaml(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    monkeypatch.setenv("SERVING_FEATURE_REPO", str(tmp_path))
    line = refused(capsys, [])
    assert line.endswith(
        f"feature_repo: {tmp_path}/feature_store.yaml is not a file (a Feast repository has one)"
    )
    (tmp_path / "feature_store.yaml").write_text("project: model_serving\n", encoding="utf-8")
    assert load_settings([]).feature_repo == tmp_path


@pytest.mark.parametrize(
    ("name", "version"), [("tabular-classifier", "2"), ("m.v_2", "1" * 18), ("M" * 128, "9")]
)
def test_a_model_name_and_version_are_accepted_together(
    monkeypatch: pytest.MonkeyPatch, name: str, version: str
) -> None:
    monkeypatch.setenv("SERVING_MODEL_NAME", name)
    monkeypatch.setenv("SERVING_MODEL_VERSION", version)
    assert load_settings([]).model_dump() == DEFAULTS | {"model_name": name, "model_version": version}


def test_a_variable_of_another_prefix_or_no_setting_is_ignored(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HTTP_PORT", "1")
    monkeypatch.setenv("SERVING_NO_SUCH_SETTING", "1")
    assert load_settings([]).model_dump() == DEFAULTS


# --- the checks across settings (pydantic validators) -------------------------------------------------------

JWT = {
    "SERVING_AUTH_MODE": "jwt",
    "SERVING_AUTH_ISSUER": "https://idp.example.com",
    "SERVING_AUTH_AUDIENCES": "model-api",
    "SERVING_AUTH_JWKS_URL": "https://idp.example.com/jwks",
}


@pytest.mark.parametrize(
    ("env", "reason"),
    [
        ({**JWT, "SERVING_AUTH_ISSUER": ""}, "auth_mode=jwt needs auth_issuer and auth_audiences"),
        ({**JWT, "SERVING_AUTH_AUDIENCES": " , "}, "auth_mode=jwt needs auth_issuer and auth_audiences"),
        (
            {**JWT, "SERVING_AUTH_JWKS_FILE": "/etc/jwks.json"},
            "auth_mode=jwt needs exactly one of auth_jwks_url or auth_jwks_file",
        ),
        (
            {**JWT, "SERVING_AUTH_JWKS_URL": ""},
            "auth_mode=jwt needs exactly one of auth_jwks_url or auth_jwks_file",
        ),
        (
            {**JWT, "SERVING_AUTH_SCOPE_FORMAT": "models:{model}"},
            "auth_scope_format must contain {model} and {action}",
        ),
        (
            {**JWT, "SERVING_AUTH_SCOPE_FORMAT": "{action}"},
            "auth_scope_format must contain {model} and {action}",
        ),
        ({"SERVING_TLS_CERT": "/a.crt"}, "TLS needs both tls_cert and tls_key"),
        ({"SERVING_TLS_KEY": "/a.key"}, "TLS needs both tls_cert and tls_key"),
        ({"SERVING_TLS_CLIENT_CA": "/ca.crt"}, "tls_client_ca (mutual TLS) needs tls_cert and tls_key"),
        ({"SERVING_METRICS_PORT": "8080"}, "metrics_port must differ from http_port and grpc_port"),
        ({"SERVING_METRICS_PORT": "8081"}, "metrics_port must differ from http_port and grpc_port"),
        ({"SERVING_ASYNC_WORKER": "true"}, "async_worker needs async_redis_url (the queue to consume)"),
        (
            {"SERVING_ASYNC_OBJECT_STORE": "file:///srv/store"},
            "async_object_store needs async_redis_url (references are for queued jobs)",
        ),
        (
            {"SERVING_ASYNC_CALLBACK_HOSTS": "hooks.example.com"},
            "async_callback_hosts needs async_callback_secret_file (callbacks are signed)",
        ),
        *(
            (only, "model_name and model_version go together (one version's directory served as it)")
            for only in ({"SERVING_MODEL_NAME": "m"}, {"SERVING_MODEL_VERSION": "3"})
        ),
    ],
)
def test_settings_that_do_not_fit_together_exit_2_with_the_reason(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], env: dict[str, str], reason: str
) -> None:
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    line = refused(capsys, [])
    # A check across settings belongs to no one field, so no name precedes its reason.
    assert line == f"{PROG}: error: invalid setting: {reason}", line


@pytest.mark.parametrize(
    ("env", "changed"),
    [
        (
            {"SERVING_ASYNC_REDIS_URL": "redis://127.0.0.1:6379/0", "SERVING_ASYNC_WORKER": "true"},
            {"async_redis_url": "redis://127.0.0.1:6379/0", "async_worker": True},
        ),
        (
            {"SERVING_ASYNC_CALLBACK_HOSTS": "a.example.com, b.example.com",
             "SERVING_ASYNC_CALLBACK_SECRET_FILE": "{key_file}"},
            {"async_callback_hosts": "a.example.com, b.example.com",
             "async_callback_secret_file": "{key_file}"},
        ),
        ({"SERVING_ASYNC_CALLBACK_HOSTS": " , "}, {"async_callback_hosts": " , "}),
        (  # normalized: no trailing slash
            {"SERVING_ASYNC_REDIS_URL": "redis://q:6379", "SERVING_ASYNC_OBJECT_STORE": "file:///srv/models/"},
            {"async_redis_url": "redis://q:6379", "async_object_store": "file:///srv/models"},
        ),
        (
            {"SERVING_ASYNC_REDIS_URL": "redis://q:6379",
             "SERVING_ASYNC_OBJECT_STORE": "s3://eu-prod-async-eu-central-1/jobs/tabular-classifier"},
            {"async_redis_url": "redis://q:6379",
             "async_object_store": "s3://eu-prod-async-eu-central-1/jobs/tabular-classifier"},
        ),
        (
            {"SERVING_ASYNC_REDIS_URL": "redis://q:6379", "SERVING_ASYNC_OBJECT_STORE": "s3://jobs.bucket/",
             "SERVING_ASYNC_INLINE_RESULT_BYTES": "0", "SERVING_ASYNC_MAX_OBJECT_BYTES": "1024"},
            {"async_redis_url": "redis://q:6379", "async_object_store": "s3://jobs.bucket",
             "async_inline_result_bytes": 0, "async_max_object_bytes": 1024},
        ),
        (
            {"SERVING_ASYNC_CALLBACK_BACKOFF_S": "5", "SERVING_ASYNC_CALLBACK_BACKOFF_CAP_S": "5"},
            {"async_callback_backoff_s": 5.0, "async_callback_backoff_cap_s": 5.0},
        ),
    ],
)  # fmt: skip
def test_async_settings_that_fit_together_are_accepted(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, env: dict[str, str], changed: dict[str, object]
) -> None:
    key_file = tmp_path / "callback.key"
    key_file.write_bytes(b"k" * 32 + b"\n")
    for name, value in env.items():
        monkeypatch.setenv(name, value.format(key_file=key_file))
    expected = {
        name: Path(str(value).format(key_file=key_file)) if name.endswith("_file") else value
        for name, value in changed.items()
    }
    assert load_settings([]).model_dump() == DEFAULTS | expected, env


def test_an_s3_store_without_boto3_exits_2_naming_the_extra(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    find_spec = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *rest: None if name == "boto3" else find_spec(name, *rest)
    )
    monkeypatch.setenv("SERVING_ASYNC_REDIS_URL", "redis://q:6379")
    monkeypatch.setenv("SERVING_ASYNC_OBJECT_STORE", "file:///srv/store")
    assert load_settings([]).async_object_store == "file:///srv/store", "a directory needs no boto3"
    monkeypatch.setenv("SERVING_ASYNC_OBJECT_STORE", "s3://jobs-bucket/jobs")
    line = refused(capsys, [])
    expected = "async_object_store: an s3:// store needs boto3 (the async-s3 extra)"
    assert line == f"{PROG}: error: invalid setting: {expected}", line


def test_the_callback_backoff_cap_is_bounded_below_by_the_backoff(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("SERVING_ASYNC_CALLBACK_BACKOFF_S", "2.5")
    monkeypatch.setenv("SERVING_ASYNC_CALLBACK_BACKOFF_CAP_S", "2.5")
    assert load_settings([]).async_callback_backoff_cap_s == 2.5, "a cap equal to the backoff is accepted"
    monkeypatch.setenv("SERVING_ASYNC_CALLBACK_BACKOFF_CAP_S", "2.499")
    line = refused(capsys, [])
    expected = "async_callback_backoff_cap_s: must be at least async_callback_backoff_s (2.5)"
    assert line == f"{PROG}: error: invalid setting: {expected}", line
    monkeypatch.setenv("SERVING_ASYNC_CALLBACK_BACKOFF_S", "0")  # refused itself: no comparison is made
    line = refused(capsys, [])
    assert line == f"{PROG}: error: invalid setting: async_callback_backoff_s: {gt(0)}", line


@pytest.mark.parametrize(
    ("hosts", "key", "reason"),
    [
        (
            "hooks.example.com/path",
            b"k" * 32,
            "allowed callback host 'hooks.example.com/path' must be a host",
        ),
        ("ftp://hooks.example.com", b"k" * 32, "has a scheme other than http:// or https://"),
        ("hooks.example.com", b"short", "holds 5 bytes; at least 32"),
        ("hooks.example.com", None, "cannot read the callback key file"),
    ],
)
def test_an_unusable_callback_host_or_key_exits_2_naming_callbacks(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path,
    hosts: str, key: bytes | None, reason: str,
) -> None:  # fmt: skip
    key_file = tmp_path / "callback.key"
    if key is not None:
        key_file.write_bytes(key)
    monkeypatch.setenv("SERVING_ASYNC_CALLBACK_HOSTS", hosts)
    monkeypatch.setenv("SERVING_ASYNC_CALLBACK_SECRET_FILE", str(key_file))
    line = refused(capsys, [])
    assert line.startswith(f"{PROG}: error: invalid setting: callbacks: "), line
    assert reason in line, line


def test_every_problem_is_named_in_one_line_in_field_order(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("SERVING_WORKERS", "0")
    line = refused(capsys, ["--http-port", "-1", "--max-tensor-rank", "33"])
    expected = f"http_port: {ge(0)}; workers: {ge(1)}; max_tensor_rank: {le(32)}"
    assert line == f"{PROG}: error: invalid setting: {expected}", line


@pytest.mark.parametrize(
    ("env", "reason"),
    [
        ({"SERVING_AUTH_ALGORITHMS": "HS256"}, "are not accepted"),
        (
            {"SERVING_AUTH_JWKS_URL": "http://idp.example.com/jwks"},
            "the JWKS URL must be https (or http to loopback)",
        ),
        ({"SERVING_AUTH_JWKS_URL": "", "SERVING_AUTH_JWKS_FILE": "/nonexistent/jwks.json"}, "No such file"),
    ],
)
def test_a_token_setting_the_verifier_refuses_exits_2_naming_auth(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], env: dict[str, str], reason: str
) -> None:
    for name, value in {**JWT, **env}.items():
        monkeypatch.setenv(name, value)
    line = refused(capsys, [])
    assert line.startswith(f"{PROG}: error: invalid setting: auth: "), line
    assert reason in line, line


def test_complete_token_settings_are_accepted() -> None:
    with pytest.MonkeyPatch.context() as patch:
        for name, value in JWT.items():
            patch.setenv(name, value)
        settings = load_settings([])
    assert (settings.auth_mode, settings.auth_issuer) == ("jwt", "https://idp.example.com"), settings


# --- the flags ----------------------------------------------------------------------------------------------

# Every flag with its setting, its type and its help text, as `--help` prints them.
FLAGS: dict[str, tuple[str, object, str]] = {
    "--model-repository": ("model_repository", Path, "model repository (default: bundled models)"),
    "--host": ("host", None, "address to listen on (default 127.0.0.1)"),
    "--http-port": ("http_port", int, "REST port (default 8080)"),
    "--grpc-port": ("grpc_port", int, "gRPC port (default 8081)"),
    "--workers": ("workers", int, "server processes sharing the ports (default 1)"),
    "--max-request-bytes": ("max_request_bytes", int, "request size limit (default 16 MiB)"),
    "--grace-period-seconds": ("grace_period_seconds", float, "drain time after SIGTERM (default 20)"),
    "--max-header-bytes": (
        "max_header_bytes",
        int,
        "bytes of request header names and values (default 16384)",
    ),
    "--max-header-count": ("max_header_count", int, "request header fields (default 100)"),
    "--max-url-bytes": ("max_url_bytes", int, "request target bytes (default 8192)"),
    "--max-request-id-length": (
        "max_request_id_length",
        int,
        "longer (or non [A-Za-z0-9._:-]) ids are replaced (default 128)",
    ),
    "--header-timeout-seconds": (
        "header_timeout_seconds",
        float,
        "from connect (or a request's first byte) to its last header (default 10.0)",
    ),
    "--body-timeout-seconds": (
        "body_timeout_seconds",
        float,
        "from a request's last header to its last body byte (default 30.0)",
    ),
    "--idle-timeout-seconds": (
        "idle_timeout_seconds",
        float,
        "keep-alive connections idle this long are closed (default 30.0)",
    ),
    "--max-connections": (
        "max_connections",
        int,
        "open connections per worker, per transport (default 1000)",
    ),
    "--max-streams-per-connection": (
        "max_streams_per_connection",
        int,
        "concurrent gRPC calls on one HTTP/2 connection (default 128)",
    ),
    "--max-tensor-rank": ("max_tensor_rank", int, "dimensions of an input tensor (default 16)"),
    "--max-tensor-elements": ("max_tensor_elements", int, "elements of an input tensor (default 4194304)"),
    "--no-access-log": ("access_log", None, "no request log"),
    "--tls-cert": ("tls_cert", Path, "PEM certificate chain for both ports (TLS on)"),
    "--tls-key": ("tls_key", Path, "PEM private key of --tls-cert, unencrypted"),
    "--tls-client-ca": (
        "tls_client_ca",
        Path,
        "PEM CA bundle; set, clients must present a certificate it signed (mTLS)",
    ),
    "--tls-reload-seconds": (
        "tls_reload_seconds",
        float,
        "how often the TLS files are checked for a new certificate (0: only on SIGHUP)",
    ),
    "--metrics-port": (
        "metrics_port",
        int,
        "serve /metrics only on this plain-HTTP port (unset: on the REST port, as before)",
    ),
    "--metrics-host": ("metrics_host", str, "address of the metrics port (empty: the same as host)"),
}


def options() -> dict[str, argparse.Action]:
    actions = build_parser()._actions
    return {
        action.option_strings[-1]: action
        for action in actions
        if action.option_strings and action.dest != "help"
    }


def test_every_flag_has_its_setting_type_and_help() -> None:
    found = {flag: (action.dest, action.type, action.help) for flag, action in options().items()}
    assert found == FLAGS


def test_the_help_names_the_program_and_what_it_serves() -> None:
    parser = build_parser()
    assert parser.prog == PROG, parser.prog
    expected = "ONNX Runtime server for the Open Inference Protocol (KServe V2) over REST and gRPC."
    assert parser.description == expected, parser.description


def test_every_limit_has_a_flag_named_after_it() -> None:
    flags = {action.dest: flag for flag, action in options().items()}
    for name in LIMITS:
        assert flags.get(name) == "--" + name.replace("_", "-"), f"{name} has no flag of its name"


@pytest.mark.parametrize(("flag", "spec"), sorted(FLAGS.items()))
def test_the_default_a_flag_states_is_the_settings_default(flag: str, spec: tuple[str, object, str]) -> None:
    field, _, help_text = spec
    stated = re.search(r"\(default:? ([^)]*)\)$", help_text)
    if stated is None:
        return  # the flag's help states no default (the TLS and metrics flags)
    default = Settings.model_fields[field].default
    text = stated.group(1)
    if text == "bundled models":
        assert default == BUNDLED_MODELS, default
    elif text.endswith(" MiB"):
        assert default == int(text.removesuffix(" MiB")) * 1024 * 1024, (flag, default)
    else:
        assert str(default) == text or default == parsed(field, text), (flag, help_text, default)


# argv, then the settings it changes from the defaults.
FLAG_VALUES: list[tuple[list[str], dict[str, object]]] = [
    (["--model-repository", "/srv/models"], {"model_repository": Path("/srv/models")}),
    (["--host", "0.0.0.0"], {"host": "0.0.0.0"}),
    (["--http-port", "9000"], {"http_port": 9000}),
    (["--grpc-port", "9001"], {"grpc_port": 9001}),
    (["--workers", "4"], {"workers": 4}),
    (["--max-request-bytes", "2048"], {"max_request_bytes": 2048}),
    (["--grace-period-seconds", "2.5"], {"grace_period_seconds": 2.5}),
    (["--max-header-bytes", "2048"], {"max_header_bytes": 2048}),
    (["--max-header-count", "50"], {"max_header_count": 50}),
    (["--max-url-bytes", "512"], {"max_url_bytes": 512}),
    (["--max-request-id-length", "16"], {"max_request_id_length": 16}),
    (["--header-timeout-seconds", "0.5"], {"header_timeout_seconds": 0.5}),
    (["--body-timeout-seconds", "1.5"], {"body_timeout_seconds": 1.5}),
    (["--idle-timeout-seconds", "2.5"], {"idle_timeout_seconds": 2.5}),
    (["--max-connections", "10"], {"max_connections": 10}),
    (["--max-streams-per-connection", "4"], {"max_streams_per_connection": 4}),
    (["--max-tensor-rank", "3"], {"max_tensor_rank": 3}),
    (["--max-tensor-elements", "99"], {"max_tensor_elements": 99}),
    (["--no-access-log"], {"access_log": False}),
    (
        ["--tls-cert", "/a.crt", "--tls-key", "/a.key"],
        {"tls_cert": Path("/a.crt"), "tls_key": Path("/a.key")},
    ),
    (
        ["--tls-cert", "/a.crt", "--tls-key", "/a.key", "--tls-client-ca", "/ca.crt"],
        {"tls_cert": Path("/a.crt"), "tls_key": Path("/a.key"), "tls_client_ca": Path("/ca.crt")},
    ),
    (["--tls-reload-seconds", "0.5"], {"tls_reload_seconds": 0.5}),
    (["--metrics-port", "9090"], {"metrics_port": 9090}),
    (["--metrics-host", "10.0.0.1"], {"metrics_host": "10.0.0.1"}),
]


def test_every_flag_is_in_the_flag_values_table() -> None:
    used = {arg for argv, _ in FLAG_VALUES for arg in argv if arg.startswith("--")}
    assert used == set(FLAGS), "every flag must be shown setting its value"


@pytest.mark.parametrize(("argv", "changed"), FLAG_VALUES, ids=[" ".join(argv) for argv, _ in FLAG_VALUES])
def test_a_flag_sets_its_setting_and_no_other(argv: list[str], changed: dict[str, object]) -> None:
    settings = load_settings(argv)
    assert settings.model_dump() == DEFAULTS | changed, argv
    for field, value in changed.items():
        assert type(getattr(settings, field)) is type(value), f"{field} must be a {type(value).__name__}"


@pytest.mark.parametrize(
    ("argv", "line"),
    [
        (["--max-header-count", "50.5"], "argument --max-header-count: invalid int value: '50.5'"),
        (["--max-tensor-elements", "1e3"], "argument --max-tensor-elements: invalid int value: '1e3'"),
        (["--http-port", "http"], "argument --http-port: invalid int value: 'http'"),
        (
            ["--header-timeout-seconds", "soon"],
            "argument --header-timeout-seconds: invalid float value: 'soon'",
        ),
        (["--metrics-port", "9090.5"], "argument --metrics-port: invalid int value: '9090.5'"),
        (["--max-header-count", "7"], f"invalid setting: max_header_count: {ge(8)}"),
        (["--header-timeout-seconds", "0"], f"invalid setting: header_timeout_seconds: {gt(0)}"),
        (["--no-such-flag"], "unrecognized arguments: --no-such-flag"),
    ],
)
def test_a_bad_flag_exits_2_naming_the_flag_and_the_reason(
    capsys: pytest.CaptureFixture[str], argv: list[str], line: str
) -> None:
    assert refused(capsys, argv) == f"{PROG}: error: {line}"


@pytest.mark.parametrize(
    ("field", "flag", "from_env", "from_flag"),
    [
        ("http_port", "--http-port", "9000", "9001"),
        ("header_timeout_seconds", "--header-timeout-seconds", "1.5", "2.5"),
        ("host", "--host", "10.0.0.1", "10.0.0.2"),
        ("metrics_host", "--metrics-host", "10.0.0.1", "10.0.0.2"),
    ],
)
def test_a_flag_overrides_its_variable_and_an_absent_flag_does_not(
    monkeypatch: pytest.MonkeyPatch, field: str, flag: str, from_env: str, from_flag: str
) -> None:
    monkeypatch.setenv(variable(field), from_env)
    assert str(getattr(load_settings([]), field)) == from_env, "without the flag, the variable holds"
    assert str(getattr(load_settings([flag, from_flag]), field)) == from_flag, "the flag wins"


def test_without_no_access_log_the_variable_decides(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SERVING_ACCESS_LOG", "false")
    assert load_settings([]).access_log is False, "an absent --no-access-log must not turn the log back on"
    monkeypatch.setenv("SERVING_ACCESS_LOG", "true")
    assert load_settings(["--no-access-log"]).access_log is False, "the flag wins over the variable"


def test_without_an_argv_the_command_line_is_read(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sys, "argv", [MAIN, "--http-port", "9100"])
    assert load_settings().http_port == 9100, "load_settings() reads sys.argv"
    assert load_settings([]).http_port == 8080, "an explicit argv is used instead of sys.argv"


# --- ONNX Runtime threads -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("cpus", "workers", "intra_op_threads", "threads"),
    [
        (8, 1, 0, 8),
        (8, 2, 0, 4),
        (8, 3, 0, 2),  # floor: 2 threads each, never more threads than cores
        (8, 8, 0, 1),
        (2, 4, 0, 1),  # more workers than cores: still one thread each
        (1, 1, 0, 1),
        (None, 1, 0, 1),  # the core count unknown: one thread
        (None, 2, 0, 1),
        (8, 2, 3, 3),  # set explicitly: taken as given
        (1, 4, 6, 6),
    ],
)
def test_onnx_threads_share_the_cores_among_the_workers(
    monkeypatch: pytest.MonkeyPatch, cpus: int | None, workers: int, intra_op_threads: int, threads: int
) -> None:
    monkeypatch.setattr(os, "cpu_count", lambda: cpus)
    got = Settings(workers=workers, intra_op_threads=intra_op_threads).onnx_threads()
    assert got == threads and type(got) is int, f"{cpus} cores, {workers} workers, {intra_op_threads}: {got}"


# --- serve mode (SageMaker's container contract, docs/sagemaker.md) ----------------------------------------

SERVE_DEFAULTS: dict[str, object] = {"model_repository": SAGEMAKER_MODEL_DIR, "host": "0.0.0.0"}

# The environment, argv, then the settings it changes from the defaults.
SERVE_MODE: list[tuple[dict[str, str], list[str], dict[str, object]]] = [
    ({}, ["serve"], SERVE_DEFAULTS),
    ({"SAGEMAKER_BIND_TO_PORT": "9090"}, ["serve"], SERVE_DEFAULTS | {"http_port": 9090}),
    ({"SERVING_HTTP_PORT": "9000"}, ["serve"], SERVE_DEFAULTS | {"http_port": 9000}),
    (
        {"SERVING_HTTP_PORT": "9000", "SAGEMAKER_BIND_TO_PORT": "9090"},
        ["serve"],
        SERVE_DEFAULTS | {"http_port": 9090},
    ),
    (
        {"SAGEMAKER_BIND_TO_PORT": "9090"},
        ["serve", "--http-port", "9100"],
        SERVE_DEFAULTS | {"http_port": 9100},
    ),
    (
        {"SERVING_MODEL_REPOSITORY": "/srv/models", "SERVING_HOST": "127.0.0.1"},
        ["serve"],
        {"model_repository": Path("/srv/models")},
    ),
    (
        {},
        ["serve", "--model-repository", "/srv/models"],
        {"model_repository": Path("/srv/models"), "host": "0.0.0.0"},
    ),
    ({}, ["--workers", "2", "serve"], SERVE_DEFAULTS | {"workers": 2}),
    ({"SAGEMAKER_BIND_TO_PORT": "9090"}, [], {}),  # only serve mode reads SageMaker's variable
]


@pytest.mark.parametrize(
    ("env", "argv", "changed"), SERVE_MODE, ids=[f"{env} {' '.join(argv)}" for env, argv, _ in SERVE_MODE]
)
def test_serve_mode_has_the_sagemaker_defaults_and_the_variables_and_flags_win(
    monkeypatch: pytest.MonkeyPatch, env: dict[str, str], argv: list[str], changed: dict[str, object]
) -> None:
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    assert load_settings(argv).model_dump() == DEFAULTS | changed, (env, argv)


@pytest.mark.parametrize(
    ("port", "line"),
    [
        ("http", "invalid setting: SAGEMAKER_BIND_TO_PORT: must be a port number (1-65535), got 'http'"),
        ("0", "invalid setting: SAGEMAKER_BIND_TO_PORT: must be a port number (1-65535), got '0'"),
        ("65536", "invalid setting: SAGEMAKER_BIND_TO_PORT: must be a port number (1-65535), got '65536'"),
        ("-1", "invalid setting: SAGEMAKER_BIND_TO_PORT: must be a port number (1-65535), got '-1'"),
    ],
)
def test_a_bad_sagemaker_port_exits_2_naming_the_variable(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], port: str, line: str
) -> None:
    monkeypatch.setenv("SAGEMAKER_BIND_TO_PORT", port)
    assert refused(capsys, ["serve"]) == f"{PROG}: error: {line}"


def test_an_unknown_mode_exits_2_naming_the_choices(capsys: pytest.CaptureFixture[str]) -> None:
    line = refused(capsys, ["predict"])
    assert line == f"{PROG}: error: argument mode: invalid choice: 'predict' (choose from 'serve')", line
