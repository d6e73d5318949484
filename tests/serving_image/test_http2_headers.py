"""serving_image.http2_headers: a request's header list checked as RFC 9113 section 8 requires."""

import pytest

from serving_image.http2_frames import ErrorCode, ProtocolViolation
from serving_image.http2_headers import check_request_headers

STREAM = 13
Headers = list[tuple[bytes, bytes]]

PSEUDO: Headers = [
    (b":method", b"POST"),
    (b":scheme", b"http"),
    (b":path", b"/inference.GRPCInferenceService/ModelInfer"),
    (b":authority", b"localhost:8001"),
]
REGULAR: Headers = [
    (b"content-type", b"application/grpc"),
    (b"te", b"trailers"),
    (b"grpc-encoding", b"gzip"),
    (b"grpc-timeout", b"250m"),
    (b"content-length", b"42"),
    (b"user-agent", b"grpc-python/1.70.0 grpc-c/45.0.0 (linux; chttp2)"),
    (b"x-trace-bin", b"AAECAw=="),
    (b"x-tenant", b"acme corp"),
]
VALID = PSEUDO + REGULAR


def test_valid_grpc_request_gives_its_head() -> None:
    head = check_request_headers(VALID, max_count=len(VALID), stream_id=STREAM)
    assert head.method == b"POST", head
    assert head.path == b"/inference.GRPCInferenceService/ModelInfer", head
    assert head.content_type == b"application/grpc", head
    assert head.encoding == b"gzip", head
    assert head.timeout == b"250m", head
    assert head.content_length == 42, head
    assert head.too_many is False, "as many fields as allowed is not too many"
    assert head.metadata == {
        "content-type": "application/grpc",
        "te": "trailers",
        "grpc-encoding": "gzip",
        "grpc-timeout": "250m",
        "content-length": "42",
        "user-agent": "grpc-python/1.70.0 grpc-c/45.0.0 (linux; chttp2)",
        "x-tenant": "acme corp",
    }, f"metadata without pseudo-headers nor -bin fields: {head.metadata}"


def test_optional_fields_are_none_when_absent() -> None:
    head = check_request_headers([*PSEUDO[:3], (b"content-type", b"application/grpc")], 100, STREAM)
    assert (head.encoding, head.timeout, head.content_length) == (None, None, None), head
    assert head.metadata == {"content-type": "application/grpc"}, head.metadata


def test_metadata_values_keep_non_ascii_bytes_as_latin_1() -> None:
    head = check_request_headers([*PSEUDO, (b"x-name", b"caf\xc3\xa9")], 100, STREAM)
    assert head.metadata["x-name"] == "caf\xc3\xa9", f"latin-1, byte for byte: {head.metadata!r}"


@pytest.mark.parametrize(
    ("max_count", "too_many"),
    [(len(VALID) + 1, False), (len(VALID), False), (len(VALID) - 1, True), (1, True)],
    ids=["one-spare", "exactly-max", "max-plus-one", "far-over"],
)
def test_too_many_is_set_above_max_count(max_count: int, too_many: bool) -> None:
    head = check_request_headers(VALID, max_count=max_count, stream_id=STREAM)
    assert head.too_many is too_many, f"{len(VALID)} fields with max_count {max_count}"


def with_field(name: bytes, value: bytes) -> Headers:
    """The valid request with one more regular field."""
    return [*VALID, (name, value)]


def replaced(name: bytes, value: bytes) -> Headers:
    """The valid request with ``name``'s value replaced."""
    return [(key, value if key == name else old) for key, old in VALID]


def without(name: bytes) -> Headers:
    return [(key, value) for key, value in VALID if key != name]


MALFORMED = [
    pytest.param(with_field(b"X-Tenant", b"acme"), id="uppercase-name"),
    pytest.param(with_field(b"x-tenAnt", b"acme"), id="one-uppercase-letter"),
    pytest.param(with_field(b"x tenant", b"acme"), id="space-in-name"),
    pytest.param(with_field(b"x-tenant:", b"acme"), id="colon-in-name"),
    pytest.param(with_field(b"", b"acme"), id="empty-name"),
    pytest.param([*PSEUDO, (b":protocol", b"websocket"), *REGULAR], id="unknown-pseudo"),
    pytest.param([*PSEUDO, (b":", b"x"), *REGULAR], id="bare-colon-pseudo"),
    pytest.param([*PSEUDO, (b":status", b"200"), *REGULAR], id="response-pseudo-status"),
    pytest.param([*PSEUDO, (b":path", b"/other"), *REGULAR], id="duplicated-path"),
    pytest.param([(b":method", b"POST"), *PSEUDO, *REGULAR], id="duplicated-method"),
    pytest.param([*PSEUDO[:3], *REGULAR, PSEUDO[3]], id="pseudo-after-regular"),
    pytest.param([*PSEUDO[:3], (b"x-tenant", b"acme"), PSEUDO[3]], id="pseudo-after-metadata"),
    pytest.param([*PSEUDO[:3], (b"x-trace-bin", b"AAECAw=="), PSEUDO[3]], id="pseudo-after-binary-metadata"),
    pytest.param(without(b":method"), id="missing-method"),
    pytest.param(without(b":scheme"), id="missing-scheme"),
    pytest.param(without(b":path"), id="missing-path"),
    pytest.param(replaced(b":path", b""), id="empty-path"),
    pytest.param(with_field(b"connection", b"keep-alive"), id="connection"),
    pytest.param(with_field(b"keep-alive", b"timeout=5"), id="keep-alive"),
    pytest.param(with_field(b"transfer-encoding", b"chunked"), id="transfer-encoding"),
    pytest.param(with_field(b"upgrade", b"h2c"), id="upgrade"),
    pytest.param(with_field(b"proxy-connection", b"keep-alive"), id="proxy-connection"),
    pytest.param(replaced(b"te", b"gzip"), id="te-gzip"),
    pytest.param(replaced(b"te", b"trailers, gzip"), id="te-trailers-and-more"),
    pytest.param(replaced(b"te", b""), id="te-empty"),
    pytest.param(with_field(b"x-tenant", b"ac\x00me"), id="nul-in-value"),
    pytest.param(with_field(b"x-tenant", b"ac\rme"), id="cr-in-value"),
    pytest.param(with_field(b"x-tenant", b"ac\nme"), id="lf-in-value"),
    pytest.param(with_field(b"x-tenant", b"acme\n"), id="trailing-lf-in-value"),
    pytest.param(replaced(b":path", b"/a\r\nx-injected: 1"), id="crlf-in-pseudo-value"),
    pytest.param(replaced(b":authority", b"host\x00"), id="nul-in-pseudo-value"),
    pytest.param(with_field(b"x-tenant", b" acme"), id="leading-space"),
    pytest.param(with_field(b"x-tenant", b"acme "), id="trailing-space"),
    pytest.param(with_field(b"x-tenant", b"\tacme"), id="leading-tab"),
    pytest.param(with_field(b"x-tenant", b"acme\t"), id="trailing-tab"),
    pytest.param(with_field(b"x-tenant", b" "), id="only-a-space"),
    pytest.param(replaced(b":method", b" POST"), id="leading-space-in-pseudo-value"),
    pytest.param(replaced(b"content-length", b"abc"), id="content-length-letters"),
    pytest.param(replaced(b"content-length", b""), id="content-length-empty"),
    pytest.param(replaced(b"content-length", b"-1"), id="content-length-negative"),
    pytest.param(replaced(b"content-length", b"+5"), id="content-length-plus"),
    pytest.param(replaced(b"content-length", b"4.2"), id="content-length-decimal"),
    pytest.param(replaced(b"content-length", b"1e3"), id="content-length-exponent"),
    pytest.param(replaced(b"content-length", b"0x10"), id="content-length-hex"),
    pytest.param(replaced(b"content-length", b"1,2"), id="content-length-list"),
    pytest.param(replaced(b"content-length", "\u0661".encode()), id="content-length-arabic-digit"),
    pytest.param(replaced(b"content-length", b"9" * 20), id="content-length-20-digits"),
]


@pytest.mark.parametrize("headers", MALFORMED)
def test_malformed_request_is_a_stream_protocol_error(headers: Headers) -> None:
    with pytest.raises(ProtocolViolation) as caught:
        check_request_headers(headers, max_count=100, stream_id=STREAM)
    assert caught.value.code == ErrorCode.PROTOCOL_ERROR, f"{headers}: {caught.value.code!r}"
    assert caught.value.stream_id == STREAM, f"a malformed request is an error of its stream: {caught.value}"


@pytest.mark.parametrize(
    ("value", "expected"),
    [(b"0", 0), (b"007", 7), (b"9" * 19, 10**19 - 1)],
    ids=["zero", "leading-zeros", "19-digits"],
)
def test_content_length_accepts_digits(value: bytes, expected: int) -> None:
    head = check_request_headers(replaced(b"content-length", value), 100, STREAM)
    assert head.content_length == expected, f"content-length {value!r}"


def test_stream_id_is_the_one_given() -> None:
    for stream_id in (1, 3, 2**31 - 1):
        with pytest.raises(ProtocolViolation) as caught:
            check_request_headers(without(b":path"), 100, stream_id)
        assert caught.value.stream_id == stream_id, f"stream {stream_id}: {caught.value.stream_id}"


@pytest.mark.parametrize(
    ("name", "good", "bad"),
    [
        (b"x-cached", b"fine", b"fine\r\nx-evil: 1"),
        (b"x-cached", b"fine", b" fine"),
        (b"te", b"trailers", b"gzip"),
        (b"content-length", b"42", b"42a"),
    ],
    ids=["crlf", "leading-space", "te", "content-length"],
)
def test_validity_cache_does_not_let_a_bad_value_through(name: bytes, good: bytes, bad: bytes) -> None:
    fields = [(key, value) for key, value in VALID if key != name]
    for _ in range(2):  # checked, then found in the cache
        head = check_request_headers([*fields, (name, good)], 100, STREAM)
        assert head.metadata[name.decode()] == good.decode(), f"{name!r}: {good!r} is valid"
    with pytest.raises(ProtocolViolation) as caught:
        check_request_headers([*fields, (name, bad)], 100, STREAM)
    assert caught.value.code == ErrorCode.PROTOCOL_ERROR, f"{name!r}: {bad!r} after {good!r} was cached"
