"""Completion callbacks: the URL check at submit, and delivery to a real receiver on 127.0.0.1.

The receiver (tests/serving_image/callback_receiver.py) parses what the sender writes with h11, an
HTTP/1.1 implementation independent of the sender's (httptools), and answers from a script, so each
test sees the requests as a real server would and can count attempts. Time between attempts is not
waited: the sender's ``sleep`` is a recorder, so each delay is checked exactly, and ``jitter`` picks
an end of its range. The callbacks of jobs run by a server are tested in test_async_callbacks.py.
"""

import asyncio
import random
import ssl
import time
from collections.abc import Awaitable, Callable
from email.utils import formatdate
from pathlib import Path
from typing import Any, TypeVar

import orjson
import pytest

from serving_image.errors import InvalidInput, NotConfigured
from serving_image.job_callbacks import (
    MAX_RESPONSE_HEAD,
    CallbackOutcome,
    CallbackPolicy,
    CallbackSender,
    parse_allowed_hosts,
    status_document,
    validate_callback_url,
    verify_signature,
)
from tests.serving_image.callback_receiver import Answer, Receiver, independent_signature
from tests.serving_image.certs import Authority
from tests.serving_image.conftest import free_port

T = TypeVar("T")
KEY = b"k" * 16 + b"e" * 16 + b"y" * 16
NOW = 1_700_000_000.0
DOCUMENT = status_document("0123abcd", "done", "doubler", "1", response=b'{"model_name":"doubler"}')


def run(test: Callable[[], Awaitable[T]]) -> T:
    return asyncio.run(test())  # type: ignore[arg-type]


class Sleeps:
    """The sender's sleep: records each delay and returns at once."""

    def __init__(self) -> None:
        self.delays: list[float] = []

    async def __call__(self, seconds: float) -> None:
        self.delays.append(seconds)


def policy(*hosts: str, **knobs: Any) -> CallbackPolicy:
    values: dict[str, Any] = {"max_attempts": 4, "backoff_s": 1.0, "backoff_cap_s": 30.0, "timeout_s": 5.0}
    return CallbackPolicy(parse_allowed_hosts(",".join(hosts)), KEY, **(values | knobs))


def sender(receiver_port: int, sleeps: Sleeps, *, high: bool = True, **knobs: Any) -> CallbackSender:
    """A sender allowed plain http to the receiver; jitter takes the top (or bottom) of its range."""
    return CallbackSender(
        policy(f"http://127.0.0.1:{receiver_port}", **knobs), sleep=sleeps, clock=lambda: NOW,
        jitter=(lambda low, high_: high_) if high else (lambda low, high_: low),
    )  # fmt: skip


# ----------------------------------------------------------------------------- URL checks at submit

ALLOWED = policy("hooks.example.com", "alt.example.com:8443", "http://127.0.0.1:9000", "[fd00::7]:8443")


@pytest.mark.parametrize(
    ("url", "normalized"),
    [
        ("https://hooks.example.com/cb", "https://hooks.example.com/cb"),
        ("HTTPS://Hooks.Example.COM:443/cb?job=1#top", "https://hooks.example.com/cb?job=1"),
        ("https://hooks.example.com", "https://hooks.example.com/"),
        ("https://alt.example.com:8443/x", "https://alt.example.com:8443/x"),
        ("http://127.0.0.1:9000/hook", "http://127.0.0.1:9000/hook"),
        ("https://[FD00::7]:8443/v6", "https://[fd00::7]:8443/v6"),
    ],
)
def test_an_allowed_url_is_accepted_and_normalized(url: str, normalized: str) -> None:
    assert validate_callback_url(url, ALLOWED) == normalized, f"{url} should be allowed as {normalized}"


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("https://other.example.com/cb", "callback host 'other.example.com' is not an allowed callback host"),
        ("https://hooks.example.com.evil/cb", "'hooks.example.com.evil' is not an allowed callback host"),
        ("https://evilhooks.example.com/cb", "'evilhooks.example.com' is not an allowed callback host"),
        ("https://sub.hooks.example.com/cb", "'sub.hooks.example.com' is not an allowed callback host"),
        ("https://hooks.example.com./cb", "host 'hooks.example.com.' is not a valid host name"),
        ("https://hooks.example.com:8443/cb", "'hooks.example.com:8443' is not an allowed callback host"),
        ("https://alt.example.com/cb", "'alt.example.com' is not an allowed callback host"),
        ("https://hooks.example.com@evil.example/", "must not carry user information"),
        ("https://evil.example@hooks.example.com/", "must not carry user information"),
        ("https://user:pw@hooks.example.com/", "must not carry user information"),
        ("https://10.0.0.1/cb", "'10.0.0.1' is an IP address that is not an allowed callback host"),
        ("https://[::1]/cb", "'[::1]' is an IP address that is not an allowed callback host"),
        ("https://127.0.0.1:9000/cb", "'127.0.0.1:9000' is an IP address that is not an allowed"),
        ("https://127.1/cb", "host '127.1' is not a valid host name"),
        ("https://2130706433/cb", "host '2130706433' is not a valid host name"),
        ("https://0x7f.1/cb", "host '0x7f.1' is not a valid host name"),
        ("https://hooks%2eexample.com/cb", "host 'hooks%2eexample.com' is not a valid host name"),
        ("https://[1.2.3.4]/cb", "callback URL cannot be parsed"),
        ("https://[fd00::7/cb", "callback URL cannot be parsed"),
        ("ftp://hooks.example.com/cb", "must use https, not 'ftp'"),
        ("javascript:alert(1)", "must use https, not 'javascript'"),
        ("//hooks.example.com/cb", "must use https, not 'no scheme'"),
        ("http://hooks.example.com/cb", "must use https: 'hooks.example.com' is not allowed plain http"),
        ("https:///cb", "callback URL has no host"),
        ("https://hooks.example.com:99999/cb", "has an invalid port"),
        ("https://hooks.example.com:x/cb", "has an invalid port"),
        ("https://hooks.example.com\\@evil.example/", "must not contain a backslash"),
        ("https://hooks.example.com/a b", "printable ASCII without spaces"),
        ("https://hooks.example.com/\r\nX-Injected: 1", "printable ASCII without spaces"),
        ("https://höoks.example.com/", "printable ASCII without spaces"),
        ("https://hooks.example.com/" + "a" * 2100, "longer than 2048 characters"),
    ],
)
def test_a_url_outside_the_policy_is_refused_with_400_naming_the_problem(url: str, message: str) -> None:
    with pytest.raises(InvalidInput) as refused:
        validate_callback_url(url, ALLOWED)
    assert message in refused.value.message, f"{url!r}: got {refused.value.message!r}, wanted {message!r}"
    assert refused.value.status == 400, "a refused callback URL is the client's error"


def test_plain_http_is_refused_where_no_entry_allows_it() -> None:
    https_only = policy("hooks.example.com")
    with pytest.raises(InvalidInput) as refused:
        validate_callback_url("http://other.example.com/cb", https_only)
    assert "plain http only for hosts listed as http://" in refused.value.message, refused.value.message


def test_without_callbacks_configured_a_callback_is_501() -> None:
    assert CallbackPolicy.load("", None) is None, "no allowed hosts means callbacks are off"
    assert CallbackPolicy.load(" , ", None) is None, "separators alone allow nothing"
    with pytest.raises(NotConfigured) as refused:
        validate_callback_url("https://hooks.example.com/", None)
    assert refused.value.status == 501, "callbacks off is the 501 of a feature not configured"
    assert "not configured" in refused.value.message, refused.value.message


@pytest.mark.parametrize(
    ("hosts", "message"),
    [
        ("hooks.example.com/path", "must be a host or host:port, nothing more"),
        ("user@hooks.example.com", "must be a host or host:port, nothing more"),
        ("ftp://hooks.example.com", "has a scheme other than http:// or https://"),
        ("*.example.com", "is not a valid host name"),
        ("hooks.example.com:0", "has an invalid port"),
        ("ok.example.com, 127.1", "host '127.1' is not a valid host name"),
    ],
)
def test_an_unusable_allowed_host_entry_stops_the_configuration(hosts: str, message: str) -> None:
    with pytest.raises(ValueError, match="allowed callback host") as refused:
        parse_allowed_hosts(hosts)
    assert message in str(refused.value), f"{hosts!r}: {refused.value}"


def test_the_key_comes_from_its_file_and_must_be_long(tmp_path: Path) -> None:
    key_file = tmp_path / "callback.key"
    key_file.write_bytes(KEY + b"\n")
    loaded = CallbackPolicy.load("hooks.example.com, https://alt.example.com:8443", key_file, max_attempts=2)
    assert loaded is not None and loaded.key == KEY, "the key is the file's bytes without the newline"
    assert loaded.allowed == {("https", "hooks.example.com", 443), ("https", "alt.example.com", 8443)}
    assert KEY.decode() not in repr(loaded), "the key must not appear in a log of the policy"
    key_file.write_bytes(b"short\n")
    with pytest.raises(ValueError, match="holds 5 bytes"):
        CallbackPolicy.load("hooks.example.com", key_file)
    with pytest.raises(ValueError, match="no key file"):
        CallbackPolicy.load("hooks.example.com", None)
    with pytest.raises(ValueError, match="cannot read the callback key file"):
        CallbackPolicy.load("hooks.example.com", tmp_path / "missing.key")


# ----------------------------------------------------------------------------- delivery


def test_a_delivered_callback_is_signed_so_the_documented_recipe_verifies_it() -> None:
    async def test() -> tuple[CallbackOutcome, Receiver]:
        async with Receiver(Answer(200)) as receiver:
            return await sender(receiver.port, Sleeps()).send(
                f"http://127.0.0.1:{receiver.port}/hooks/done?tenant=a", DOCUMENT
            ), receiver

    outcome, receiver = run(test)
    assert outcome == CallbackOutcome(True, 1, 200, "HTTP 200"), outcome
    [request] = receiver.requests
    assert request.target == "/hooks/done?tenant=a", request.target
    assert request.body == DOCUMENT, "the body is the status document, byte for byte"
    assert request.headers["content-type"] == "application/json", request.headers
    timestamp, signature = request.headers["x-signature-timestamp"], request.headers["x-signature"]
    assert timestamp == str(int(NOW)), "the timestamp is the sender's clock in Unix seconds"
    assert signature == independent_signature(KEY, timestamp, request.body), "the recipe must verify it"
    assert verify_signature(KEY, request.body, timestamp, signature, now=NOW + 10), "fresh and intact"
    tampered = request.body.replace(b'"done"', b'"fail"')
    assert signature != independent_signature(KEY, timestamp, tampered), "a changed body must not verify"
    assert not verify_signature(KEY, tampered, timestamp, signature, now=NOW), "a changed body is refused"
    assert not verify_signature(KEY, request.body, timestamp, signature, now=NOW + 301), "a replay is stale"
    assert not verify_signature(b"x" * 32, request.body, timestamp, signature, now=NOW), "another key fails"


def test_the_status_document_carries_the_response_or_the_error() -> None:
    done = orjson.loads(DOCUMENT)
    assert done == {
        "id": "0123abcd", "status": "done", "model": "doubler", "version": "1",
        "response": {"model_name": "doubler"},
    }, done  # fmt: skip
    failed = orjson.loads(status_document("0123abcd", "failed", "doubler", None, error="bad input"))
    assert failed == {"id": "0123abcd", "status": "failed", "model": "doubler", "version": None,
                      "error": "bad input"}, failed  # fmt: skip


def test_a_503_is_retried_with_a_fresh_signature_until_delivered() -> None:
    sleeps = Sleeps()

    async def test() -> tuple[CallbackOutcome, Receiver]:
        async with Receiver(Answer(503), Answer(503), Answer(204)) as receiver:
            return await sender(receiver.port, sleeps).send(
                f"http://127.0.0.1:{receiver.port}/", DOCUMENT
            ), receiver

    outcome, receiver = run(test)
    assert outcome == CallbackOutcome(True, 3, 204, "HTTP 204"), outcome
    assert outcome.summary() == "delivered on attempt 3 (HTTP 204)", outcome.summary()
    assert len(receiver.requests) == 3, f"two 503s then a 204 are three attempts: {receiver.requests}"
    assert sleeps.delays == [1.0, 2.0], f"exponential backoff from 1 s: {sleeps.delays}"
    for request in receiver.requests:
        timestamp = request.headers["x-signature-timestamp"]
        assert request.headers["x-signature"] == independent_signature(KEY, timestamp, DOCUMENT)


def test_after_max_attempts_the_sender_gives_up_with_the_last_reason() -> None:
    sleeps = Sleeps()

    async def test() -> tuple[CallbackOutcome, Receiver]:
        async with Receiver(Answer(502), Answer(500)) as receiver:
            send = sender(receiver.port, sleeps, max_attempts=4, backoff_cap_s=3.0)
            return await send.send(f"http://127.0.0.1:{receiver.port}/", DOCUMENT), receiver

    outcome, receiver = run(test)
    assert outcome == CallbackOutcome(False, 4, 500, "HTTP 500"), outcome
    assert outcome.summary() == "gave up after 4 attempt(s): HTTP 500", outcome.summary()
    assert len(receiver.requests) == 4, f"exactly max_attempts POSTs: {len(receiver.requests)}"
    assert sleeps.delays == [1.0, 2.0, 3.0], (
        f"no sleep after the last attempt, capped at 3 s: {sleeps.delays}"
    )


def test_retry_after_is_honoured_up_to_the_cap_in_seconds_and_as_a_date() -> None:
    sleeps = Sleeps()
    in_20_s = formatdate(NOW + 20, usegmt=True)

    async def test() -> CallbackOutcome:
        async with Receiver(
            Answer(429, [("retry-after", "7")]), Answer(503, [("retry-after", "1000")]),
            Answer(503, [("retry-after", in_20_s)]), Answer(503, [("retry-after", "soon")]), Answer(204),
        ) as receiver:  # fmt: skip
            send = sender(receiver.port, sleeps, high=False, max_attempts=5, backoff_cap_s=30.0)
            return await send.send(f"http://127.0.0.1:{receiver.port}/", DOCUMENT)

    outcome = run(test)
    assert outcome.delivered and outcome.attempts == 5, outcome
    # Backoff alone (the jitter's low end) would be 0.5, 1, 2, 4.
    assert sleeps.delays == [7.0, 30.0, 20.0, 4.0], (
        f"Retry-After, capped at 30 s, unreadable ignored: {sleeps.delays}"
    )


def test_a_4xx_is_not_retried() -> None:
    async def test() -> tuple[CallbackOutcome, Receiver]:
        async with Receiver(Answer(400, [("retry-after", "1")]), Answer(204)) as receiver:
            return await sender(receiver.port, Sleeps()).send(
                f"http://127.0.0.1:{receiver.port}/", DOCUMENT
            ), receiver

    outcome, receiver = run(test)
    assert outcome == CallbackOutcome(False, 1, 400, "HTTP 400"), outcome
    assert len(receiver.requests) == 1, "a client error is final"


@pytest.mark.parametrize("status", [301, 302, 307, 308])
def test_a_redirect_is_not_followed(status: int) -> None:
    async def test() -> tuple[CallbackOutcome, Receiver, Receiver]:
        async with Receiver() as elsewhere:
            location = f"http://127.0.0.1:{elsewhere.port}/stolen"
            async with Receiver(Answer(status, [("location", location)])) as receiver:
                hosts = (f"http://127.0.0.1:{receiver.port}", f"http://127.0.0.1:{elsewhere.port}")
                send = CallbackSender(policy(*hosts), sleep=Sleeps(), clock=lambda: NOW)
                outcome = await send.send(f"http://127.0.0.1:{receiver.port}/", DOCUMENT)
                return outcome, receiver, elsewhere

    outcome, receiver, elsewhere = run(test)
    assert outcome == CallbackOutcome(False, 1, status, f"HTTP {status}: redirects are not followed"), outcome
    assert len(receiver.requests) == 1, "a redirect is final, not retried"
    assert elsewhere.requests == [], "even an allowed Location is not followed"


def test_an_unreachable_receiver_is_retried_then_given_up() -> None:
    sleeps = Sleeps()
    port = free_port()
    send = sender(port, sleeps, max_attempts=3)
    outcome = run(lambda: send.send(f"http://127.0.0.1:{port}/", DOCUMENT))
    assert not outcome.delivered and outcome.attempts == 3 and outcome.status is None, outcome
    assert outcome.reason.startswith("connection failed: "), outcome.reason
    assert len(sleeps.delays) == 2, sleeps.delays


def test_a_receiver_that_never_answers_times_out_each_attempt() -> None:
    async def test() -> tuple[CallbackOutcome, Receiver, float]:
        async with Receiver(Answer(hang=True)) as receiver:
            started = time.monotonic()
            send = sender(receiver.port, Sleeps(), max_attempts=2, timeout_s=0.2)
            outcome = await send.send(f"http://127.0.0.1:{receiver.port}/", DOCUMENT)
            return outcome, receiver, time.monotonic() - started

    outcome, receiver, elapsed = run(test)
    assert outcome == CallbackOutcome(False, 2, None, "no answer within 0.2 s"), outcome
    assert len(receiver.requests) == 2, "a timeout is retried"
    assert elapsed < 3, f"two attempts of 0.2 s took {elapsed:.2f} s"


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        (
            b"HTTP/1.1 200 OK\r\nX-Big: " + b"a" * (4 * MAX_RESPONSE_HEAD),
            f"head exceeds {MAX_RESPONSE_HEAD} bytes",
        ),
        (b"SMTP ready\r\n\r\n", "the answer is not valid HTTP/1.1"),
        (b"HTTP/1.1 200 OK\r\nContent-Le", "the connection closed before a complete answer"),
    ],
)
def test_a_bad_answer_is_a_failed_attempt(raw: bytes, reason: str) -> None:
    async def test() -> CallbackOutcome:
        async with Receiver(Answer(raw=raw)) as receiver:
            send = sender(receiver.port, Sleeps(), max_attempts=2)
            return await send.send(f"http://127.0.0.1:{receiver.port}/", DOCUMENT)

    outcome = run(test)
    assert outcome == CallbackOutcome(False, 2, None, reason) or reason in outcome.reason, outcome
    assert outcome.attempts == 2 and not outcome.delivered, f"a bad answer is retried: {outcome}"


@pytest.mark.parametrize(
    ("raw", "status"),
    [
        (b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 202 Accepted\r\nContent-Length: 0\r\n\r\n", 202),
        (
            b"HTTP/1.1 103 Early Hints\r\n\r\nHTTP/1.1 204 No Content\r\n\r\nHTTP/1.1 500 X\r\n\r\n",
            204,
        ),
        (b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nokNOT HTTP AT ALL\r\n\r\n", 200),
    ],
)
def test_the_first_final_status_counts_and_what_follows_it_is_ignored(raw: bytes, status: int) -> None:
    async def test() -> CallbackOutcome:
        async with Receiver(Answer(raw=raw)) as receiver:
            return await sender(receiver.port, Sleeps()).send(f"http://127.0.0.1:{receiver.port}/", DOCUMENT)

    outcome = run(test)
    assert outcome == CallbackOutcome(True, 1, status, f"HTTP {status}"), f"{raw!r}: {outcome}"


def test_the_answer_body_is_never_read() -> None:
    async def test() -> tuple[CallbackOutcome, Receiver]:
        async with Receiver(Answer(200, endless_body=True)) as receiver:
            outcome = await sender(receiver.port, Sleeps()).send(
                f"http://127.0.0.1:{receiver.port}/", DOCUMENT
            )
            deadline = time.monotonic() + 10
            while receiver.finished < 1 and time.monotonic() < deadline:
                await asyncio.sleep(0.01)
            return outcome, receiver

    outcome, receiver = run(test)
    assert outcome == CallbackOutcome(True, 1, 200, "HTTP 200"), outcome
    assert receiver.finished == 1, "the receiver's writes must fail once the sender closed"
    assert receiver.body_bytes_sent < 64 * 1024 * 1024, (
        f"{receiver.body_bytes_sent} body bytes of 256 MiB went out: the sender must close after the head"
    )


@pytest.mark.parametrize(
    "address", ["169.254.169.254", "::ffff:169.254.169.254", "fd00:ec2::254", "fe80::1", "0.0.0.0"]
)
def test_a_host_resolving_to_a_refused_address_is_never_connected_to(address: str) -> None:
    looked_up: list[tuple[str, int]] = []

    async def resolver(host: str, port: int) -> list[str]:
        looked_up.append((host, port))
        return [address]

    send = CallbackSender(policy("hooks.example.com"), sleep=Sleeps(), clock=lambda: NOW, resolver=resolver)
    outcome = run(lambda: send.send("https://hooks.example.com/cb", DOCUMENT))
    assert outcome == CallbackOutcome(
        False, 1, None, f"the host resolves only to refused addresses ({address})"
    ), outcome
    assert looked_up == [("hooks.example.com", 443)], looked_up


def test_the_checked_address_is_the_one_connected_to() -> None:
    async def test() -> CallbackOutcome:
        async with Receiver() as receiver:

            async def resolver(host: str, port: int) -> list[str]:
                return ["169.254.169.254", "127.0.0.1"]  # the refused one is skipped, not tried

            allowed = policy(f"http://hooks.internal:{receiver.port}")
            send = CallbackSender(allowed, sleep=Sleeps(), clock=lambda: NOW, resolver=resolver)
            outcome = await send.send(f"http://hooks.internal:{receiver.port}/cb", DOCUMENT)
            assert receiver.requests[0].headers["host"] == f"hooks.internal:{receiver.port}"
            return outcome

    assert run(test) == CallbackOutcome(True, 1, 204, "HTTP 204")


def test_a_url_no_longer_allowed_is_not_sent() -> None:
    send = CallbackSender(policy("hooks.example.com"), sleep=Sleeps(), clock=lambda: NOW)
    outcome = run(lambda: send.send("https://old.example.com/cb", DOCUMENT))
    assert outcome == CallbackOutcome(
        False, 0, None, "not sent: callback host 'old.example.com' is not an allowed callback host"
    ), outcome


def test_https_delivers_to_a_trusted_certificate_and_refuses_an_untrusted_one(tmp_path: Path) -> None:
    authority = Authority("callback-test-ca")
    cert, key = authority.issue("127.0.0.1", server=True).write(tmp_path, "receiver")
    server_tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_tls.load_cert_chain(cert, key)
    trusting = ssl.create_default_context(cadata=authority.pem.decode())

    async def test() -> tuple[CallbackOutcome, CallbackOutcome, Receiver]:
        async with Receiver(tls=server_tls) as receiver:
            allowed = policy(f"127.0.0.1:{receiver.port}", max_attempts=1)
            url = f"https://127.0.0.1:{receiver.port}/tls"
            trusted = await CallbackSender(allowed, ssl_context=trusting, sleep=Sleeps()).send(url, DOCUMENT)
            untrusted = await CallbackSender(allowed, sleep=Sleeps()).send(url, DOCUMENT)
            return trusted, untrusted, receiver

    trusted, untrusted, receiver = run(test)
    assert trusted == CallbackOutcome(True, 1, 204, "HTTP 204"), trusted
    assert not untrusted.delivered, "the system's CAs do not trust the test CA"
    assert "TLS certificate not accepted" in untrusted.reason, untrusted.reason
    assert len(receiver.requests) == 1, "nothing is sent over a connection whose certificate failed"


def test_the_delay_is_jittered_exponential_backoff_within_the_cap() -> None:
    send = CallbackSender(policy("hooks.example.com", backoff_s=0.5, backoff_cap_s=10.0), sleep=Sleeps())
    random.seed(16)
    for attempt, backoff in enumerate([0.5, 1, 2, 4, 8, 10, 10], start=1):
        draws = [send.delay(attempt, None) for _ in range(200)]
        assert all(backoff / 2 <= draw <= backoff for draw in draws), (
            f"attempt {attempt}: {min(draws)}..{max(draws)}"
        )
        assert max(draws) - min(draws) > backoff / 4, f"attempt {attempt} is not jittered: {set(draws)}"
    assert send.delay(1, 3.0) == 3.0, "a longer Retry-After wins over the backoff"
    assert send.delay(1, 3600.0) == 10.0, "Retry-After is bounded by the cap"
