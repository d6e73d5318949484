"""Completion callbacks of asynchronous jobs: checked at submit, signed, retried, never redirected.

A job may name a callback URL (the request parameter ``callback_url`` or the header
``X-Callback-Url``, docs/async-inference.md). At submit ``validate_callback_url`` refuses (400,
naming the problem) any URL whose host is not one the operator allowed; when the job's result or
dead letter is stored, the worker (``job_worker.CallbackDispatch``) hands the job's status document
(``status_document``) to ``CallbackSender.send``, which POSTs it and reports a ``CallbackOutcome``
(delivered, or gave up with the last reason), which the worker logs and records on the job.

Which URLs are allowed (``SERVING_ASYNC_CALLBACK_HOSTS``, comma-separated, from config only):

- ``hooks.example.com`` allows ``https://hooks.example.com/...`` on port 443 only;
  ``hooks.example.com:8443`` allows that port only. Hosts match exactly, case aside: no
  suffixes, no wildcards, and ``hooks.example.com.`` (a trailing dot) is another host.
- Plain ``http`` only where an entry says so: ``http://receiver.internal:8080`` allows
  ``http://receiver.internal:8080/...`` (meant for receivers inside the cluster's network; the
  body is still signed, but not private). A bare entry never allows ``http``.
- An IP address (``10.0.0.7``, ``[fd00::7]:8443``) only if it is listed as such.
- A URL with user information (``user@``), a backslash, spaces or other characters outside
  printable ASCII, or a host name whose last label starts with a digit (resolvers read
  ``127.1`` or ``0x7f.1`` as addresses) is refused whatever the list says. The fragment is dropped.

Whatever the name resolves to, link-local addresses (where cloud metadata services listen),
multicast and unspecified addresses are never connected to; the connection goes to the address
that was checked, so a second lookup cannot swap it. Proxies are not used.

Delivery: one POST per attempt, ``Content-Type: application/json``, a fresh timestamp each time.
A 2xx answer is delivered. Connection errors, timeouts (``timeout_s`` per attempt, connect to
response head), malformed answers, 5xx and 429 are retried after ``min(cap, base * 2**(n-1))``
seconds with equal jitter (between half that and all of it), or after ``Retry-After`` if it asks
for longer, but never longer than the cap. A 3xx is not followed: the sender gives up, as on any
other 4xx. Only the status line and headers are read, at most ``MAX_RESPONSE_HEAD`` bytes.

How a receiver verifies a callback (``verify_signature`` does exactly this):

1. Take the raw body bytes as received, before parsing them, and the headers
   ``X-Signature-Timestamp`` (Unix seconds) and ``X-Signature`` (``sha256=<hex>``).
2. Refuse a timestamp that is not an integer or is more than 5 minutes from your clock.
3. Compute ``"sha256=" + hex(HMAC-SHA256(key, timestamp + "." + body))`` with the shared key (the
   bytes of the key file, surrounding whitespace removed) and compare it to ``X-Signature`` in
   constant time (``hmac.compare_digest``).
4. Callbacks are at least once: the same job's document may arrive again (a retry after a lost
   answer, a redelivered job), each time with a new timestamp. Deduplicate by the document's ``id``.
"""

import asyncio
import contextlib
import hashlib
import hmac
import ipaddress
import random
import re
import socket
import ssl
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from email.utils import parsedate_to_datetime
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

import httptools
import orjson

from serving_image.errors import InvalidInput, NotConfigured
from serving_image.tensors import CALLBACK_PARAMETER

if TYPE_CHECKING:
    from serving_image.settings import Settings

CALLBACK_HEADER = "x-callback-url"
"""The header (gRPC metadata) naming a job's callback URL instead of the request parameter
``CALLBACK_PARAMETER`` (REST ``parameters``, gRPC ``string_param``)."""
SIGNATURE_HEADER = "X-Signature"
TIMESTAMP_HEADER = "X-Signature-Timestamp"
USER_AGENT = "model-serving-callback/1"
MAX_URL_LENGTH = 2048
MAX_RESPONSE_HEAD = 16 * 1024
"""Bytes of a receiver's status line and headers read at most; the body is never read."""
MIN_KEY_BYTES = 32
SIGNATURE_TOLERANCE_S = 300
DEFAULT_PORTS = {"https": 443, "http": 80}
# Never connected to, whatever a name resolves to: AWS's IPv6 metadata address (the IPv4 one,
# 169.254.169.254, is link-local like every other cloud's).
REFUSED_ADDRESSES = frozenset({ipaddress.ip_address("fd00:ec2::254")})
_LABEL = re.compile(r"[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?")

Origin = tuple[str, str, int]
"""(scheme, host, port): what one allowed-hosts entry allows, and what a URL must match."""
Resolver = Callable[[str, int], Awaitable[list[str]]]


# ----------------------------------------------------------------------------- policy and URLs


@dataclass(frozen=True, slots=True)
class CallbackPolicy:
    """Where callbacks may go, the key that signs them, and how hard delivery tries."""

    allowed: frozenset[Origin]
    key: bytes = field(repr=False)
    max_attempts: int = 5
    backoff_s: float = 1.0
    backoff_cap_s: float = 60.0
    timeout_s: float = 10.0

    def __post_init__(self) -> None:
        if not self.allowed:
            raise ValueError("a callback policy needs at least one allowed host")
        if len(self.key) < MIN_KEY_BYTES:
            raise ValueError(f"the callback key has {len(self.key)} bytes; at least {MIN_KEY_BYTES} needed")
        if self.max_attempts < 1 or self.backoff_s <= 0 or self.timeout_s <= 0:
            raise ValueError("callback attempts, backoff and timeout must be positive")
        if self.backoff_cap_s < self.backoff_s:
            raise ValueError("the callback backoff cap must be at least the backoff base")

    @classmethod
    def load(
        cls, hosts: str, secret_file: Path | None, *, max_attempts: int = 5, backoff_s: float = 1.0,
        backoff_cap_s: float = 60.0, timeout_s: float = 10.0,
    ) -> "CallbackPolicy | None":  # fmt: skip
        """The policy from the settings' values; None when no host is allowed (callbacks off).

        Raises ValueError naming the entry or the file when the configuration is unusable.
        """
        allowed = parse_allowed_hosts(hosts)
        if not allowed:
            return None
        if secret_file is None:
            raise ValueError("callback hosts are allowed but no key file is set to sign callbacks")
        return cls(allowed, read_key(secret_file), max_attempts, backoff_s, backoff_cap_s, timeout_s)

    @classmethod
    def for_settings(cls, settings: "Settings") -> "CallbackPolicy | None":
        """The policy of the ``async_callback_*`` settings; None when no host is allowed.

        Built once at start-up; raises ValueError (an unusable entry or key file) like ``load``.
        """
        return cls.load(
            settings.async_callback_hosts, settings.async_callback_secret_file,
            max_attempts=settings.async_callback_max_attempts, backoff_s=settings.async_callback_backoff_s,
            backoff_cap_s=settings.async_callback_backoff_cap_s, timeout_s=settings.async_callback_timeout_s,
        )  # fmt: skip


def read_key(path: Path) -> bytes:
    """The HMAC key: the file's bytes without surrounding whitespace (a trailing newline)."""
    try:
        key = path.read_bytes().strip()
    except OSError as err:
        raise ValueError(f"cannot read the callback key file {path}: {err.strerror}") from None
    if len(key) < MIN_KEY_BYTES:
        raise ValueError(f"the callback key file {path} holds {len(key)} bytes; at least {MIN_KEY_BYTES}")
    return key


def parse_allowed_hosts(hosts: str) -> frozenset[Origin]:
    """The origins a comma-separated list allows: ``host``, ``host:port``, ``http://host[:port]``."""
    allowed: set[Origin] = set()
    for raw in hosts.split(","):
        entry = raw.strip()
        if not entry:
            continue
        scheme, _, rest = entry.rpartition("://")
        scheme = scheme.lower() or "https"
        problem = _entry_problem(scheme, rest)
        if problem:
            raise ValueError(f"allowed callback host '{entry}' {problem}")
        origin = _origin(scheme, rest)
        if isinstance(origin, str):
            raise ValueError(f"allowed callback host '{entry}' {origin}")
        allowed.add(origin)
    return frozenset(allowed)


def _entry_problem(scheme: str, rest: str) -> str | None:
    if scheme not in DEFAULT_PORTS:
        return "has a scheme other than http:// or https://"
    if not rest or any(char in rest for char in "/?#@\\") or not _printable(rest):
        return "must be a host or host:port, nothing more"
    return None


def validate_callback_url(url: str, policy: CallbackPolicy | None) -> str:
    """The callback URL, normalized, if the policy allows it; else InvalidInput (400) saying why.

    NotConfigured (501) if this server has no callbacks at all. Normalized: scheme and host in
    lower case, the default port dropped, the path ``/`` if empty, the fragment dropped.
    """
    if policy is None:
        raise NotConfigured("callbacks are not configured on this server")
    if len(url) > MAX_URL_LENGTH:
        raise InvalidInput(f"callback URL is longer than {MAX_URL_LENGTH} characters")
    if not _printable(url):
        raise InvalidInput("callback URL must be printable ASCII without spaces (percent-encode the rest)")
    if "\\" in url:
        raise InvalidInput("callback URL must not contain a backslash")
    try:
        parts = urlsplit(url)
    except ValueError:
        raise InvalidInput("callback URL cannot be parsed") from None
    scheme = parts.scheme.lower()
    if scheme not in DEFAULT_PORTS:
        raise InvalidInput(f"callback URL must use https, not '{scheme or 'no scheme'}'")
    if not parts.netloc:
        raise InvalidInput("callback URL has no host")
    if "@" in parts.netloc:
        raise InvalidInput("callback URL must not carry user information (user@ before the host)")
    origin = _origin(scheme, parts.netloc)
    if isinstance(origin, str):
        raise InvalidInput(f"callback URL {origin}")
    _check_allowed(origin, policy.allowed)
    target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    return f"{scheme}://{_authority(origin)}{target}"


def requested_callback(header: str | None, parameter: str | None) -> str | None:
    """The callback URL a job asks for, by the header or the request parameter (unchecked); the same
    URL in both is asked once, two different ones are a 400."""
    if header is not None and parameter is not None and header != parameter:
        raise InvalidInput(
            f"the callback URL is given twice, differently (the {CALLBACK_HEADER} header and the request "
            f"parameter '{CALLBACK_PARAMETER}'); give it once"
        )
    return parameter if parameter is not None else header


def _check_allowed(origin: Origin, allowed: frozenset[Origin]) -> None:
    scheme, host, _ = origin
    if origin in allowed:
        return
    shown = _authority(origin)
    if scheme == "http" and any(entry[:2] == ("https", host) for entry in allowed):
        raise InvalidInput(f"callback URL must use https: '{host}' is not allowed plain http")
    if scheme == "http" and not any(entry[0] == "http" for entry in allowed):
        raise InvalidInput("callback URL must use https (plain http only for hosts listed as http://)")
    if _is_ip(host):
        raise InvalidInput(f"callback host '{shown}' is an IP address that is not an allowed callback host")
    raise InvalidInput(f"callback host '{shown}' is not an allowed callback host")


def _origin(scheme: str, authority: str) -> Origin | str:
    """(scheme, host, port) of ``host[:port]``, or what is wrong with it."""
    host, port = authority, DEFAULT_PORTS[scheme]
    if authority.startswith("["):
        end = authority.find("]")
        host, tail = authority[1:end] if end > 0 else "", authority[end + 1 :] if end > 0 else ""
        if not host or not _is_ip(host) or ipaddress.ip_address(host).version != 6:
            return "has an invalid IPv6 address"
        if tail and not tail.startswith(":"):
            return "has an invalid port"
        port_text = tail[1:] if tail else None
    else:
        host, colon, port_text_raw = authority.partition(":")
        port_text = port_text_raw if colon else None
    if port_text is not None:
        if not port_text.isdigit() or len(port_text) > 5 or not 0 < int(port_text) < 65536:
            return "has an invalid port"
        port = int(port_text)
    host = host.lower()
    if not authority.startswith("[") and not _is_ip(host) and not _is_dns_name(host):
        return f"host '{host}' is not a valid host name"
    return scheme, host, port


def _authority(origin: Origin) -> str:
    scheme, host, port = origin
    shown = f"[{host}]" if ":" in host else host
    return shown if port == DEFAULT_PORTS[scheme] else f"{shown}:{port}"


def _is_dns_name(host: str) -> bool:
    labels = host.split(".")
    return (
        len(host) <= 253
        and all(_LABEL.fullmatch(label) for label in labels)
        and labels[-1][0].isalpha()  # a numeric last label makes resolvers read an address
    )


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


def _printable(text: str) -> bool:
    return all("!" <= char <= "~" for char in text)


# ----------------------------------------------------------------------------- documents and signatures


def status_document(
    job_id: str, status: str, model: str, version: str | None, *,
    response: bytes | None = None, error: str | None = None,
) -> bytes:  # fmt: skip
    """The JSON POSTed on completion: id, status, model, version, and the V2 response or the error.

    ``response`` is the stored V2 response JSON, spliced in as it is (as ``GET /v2/jobs/{id}`` does).
    """
    document: dict[str, object] = {"id": job_id, "status": status, "model": model, "version": version}
    if error is not None:
        document["error"] = error
    head = orjson.dumps(document)
    if response is not None:
        return head[:-1] + b',"response":' + response + b"}"
    return head


def sign(key: bytes, timestamp: str, body: bytes) -> str:
    """``X-Signature``'s value: ``sha256=`` and the hex HMAC-SHA256 of ``timestamp + "." + body``."""
    return "sha256=" + hmac.new(key, timestamp.encode() + b"." + body, hashlib.sha256).hexdigest()


def verify_signature(
    key: bytes, body: bytes, timestamp: str, signature: str, now: float,
    tolerance_s: float = SIGNATURE_TOLERANCE_S,
) -> bool:  # fmt: skip
    """A receiver's check (the module's recipe): a fresh timestamp and a matching signature."""
    if not timestamp.isdigit() or len(timestamp) > 12 or abs(now - int(timestamp)) > tolerance_s:
        return False
    return hmac.compare_digest(sign(key, timestamp, body), signature)


# ----------------------------------------------------------------------------- delivery


@dataclass(frozen=True, slots=True)
class CallbackOutcome:
    """How a callback ended: delivered, or given up, after ``attempts`` POSTs, with the last reason."""

    delivered: bool
    attempts: int
    status: int | None
    """The receiver's last HTTP status; None if the last attempt got no answer."""
    reason: str

    def summary(self) -> str:
        """One line for the log and the job's record."""
        if self.delivered:
            return f"delivered on attempt {self.attempts} ({self.reason})"
        return f"gave up after {self.attempts} attempt(s): {self.reason}"


class _Failed(Exception):
    """One attempt's failure: its reason, whether to try again, and how long the receiver asked."""

    def __init__(self, reason: str, *, retry: bool, status: int | None = None, after: float | None = None):
        super().__init__(reason)
        self.reason, self.retry, self.status, self.after = reason, retry, status, after


class CallbackSender:
    """POSTs status documents to allowed URLs, with retries; one per worker process.

    ``sleep``, ``clock``, ``jitter`` and ``resolver`` are there for tests: what waits between
    attempts, the time stamped on a signature, the jitter's draw in [low, high], and name lookup.
    """

    def __init__(
        self, policy: CallbackPolicy, *, ssl_context: ssl.SSLContext | None = None,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep, clock: Callable[[], float] = time.time,
        jitter: Callable[[float, float], float] = random.uniform, resolver: Resolver | None = None,
        max_concurrent: int = 32,
    ) -> None:  # fmt: skip
        self.policy = policy
        self._ssl = ssl_context or _default_context()
        self._sleep, self._clock, self._jitter = sleep, clock, jitter
        self._resolve = resolver or _resolve
        # Bounds the open connections, not the callbacks waiting between attempts.
        self._slots = asyncio.Semaphore(max_concurrent)

    async def send(
        self, url: str, document: bytes, on_attempt: Callable[[int], None] | None = None
    ) -> CallbackOutcome:
        """Deliver ``document`` to ``url`` (checked again: the allowed hosts may have changed).

        ``on_attempt`` is told the number of each attempt as it starts (so a caller that cancels
        the delivery knows how far it got).
        """
        try:
            normalized = validate_callback_url(url, self.policy)
        except (InvalidInput, NotConfigured) as err:
            return CallbackOutcome(False, 0, None, f"not sent: {err.message}")
        origin, target = _origin_of(normalized), _request_target(normalized)
        for attempt in range(1, self.policy.max_attempts + 1):
            if on_attempt is not None:
                on_attempt(attempt)
            try:
                async with self._slots:
                    status = await self._attempt(origin, target, document)
            except _Failed as failed:
                if not failed.retry or attempt == self.policy.max_attempts:
                    return CallbackOutcome(False, attempt, failed.status, failed.reason)
                await self._sleep(self.delay(attempt, failed.after))
            else:
                return CallbackOutcome(True, attempt, status, f"HTTP {status}")
        raise AssertionError("unreachable: the last attempt returns")

    def delay(self, attempt: int, retry_after: float | None) -> float:
        """Seconds to wait after failed attempt ``attempt``: jittered backoff, or Retry-After if longer."""
        cap = self.policy.backoff_cap_s
        backoff = min(cap, self.policy.backoff_s * 2 ** (attempt - 1))
        wait = self._jitter(backoff / 2, backoff)
        if retry_after is not None:
            wait = max(wait, min(retry_after, cap))
        return min(wait, cap)

    async def _attempt(self, origin: Origin, target: str, body: bytes) -> int:
        _, host, port = origin
        timestamp = str(int(self._clock()))
        request = _request(origin, target, body, timestamp, sign(self.policy.key, timestamp, body))
        writer: asyncio.StreamWriter | None = None
        try:
            async with asyncio.timeout(self.policy.timeout_s):
                addresses = _allowed_addresses(await self._resolve(host, port))
                reader, writer = await self._connect(addresses, origin)
                writer.write(request)
                await writer.drain()
                status, retry_after = await _read_head(reader, self._clock)
        except TimeoutError:
            raise _Failed(f"no answer within {self.policy.timeout_s:g} s", retry=True) from None
        except OSError as err:  # refused, reset, unresolvable, TLS failures (ssl.SSLError)
            raise _Failed(f"connection failed: {_describe(err)}", retry=True) from None
        finally:
            if writer is not None:
                await _close(writer)
        return _judge(status, retry_after)

    async def _connect(
        self, addresses: list[str], origin: Origin
    ) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        scheme, host, port = origin
        tls = self._ssl if scheme == "https" else None
        last: OSError | None = None
        for address in addresses:  # in the resolver's order, each within the attempt's time
            try:
                return await asyncio.open_connection(
                    address, port, ssl=tls, server_hostname=host if tls else None
                )
            except OSError as err:
                last = err
        assert last is not None, "_allowed_addresses returns at least one address"
        raise last


def _judge(status: int, retry_after: float | None) -> int:
    """The status if delivered; else the failure, retried on 429 and 5xx only."""
    if 200 <= status < 300:
        return status
    if 300 <= status < 400:
        raise _Failed(f"HTTP {status}: redirects are not followed", retry=False, status=status)
    retry = status == 429 or status >= 500
    raise _Failed(f"HTTP {status}", retry=retry, status=status, after=retry_after if retry else None)


def _allowed_addresses(addresses: list[str]) -> list[str]:
    allowed = [address for address in addresses if not _refused(ipaddress.ip_address(address))]
    if not allowed:
        shown = ", ".join(sorted(set(addresses))) or "nothing"
        raise _Failed(f"the host resolves only to refused addresses ({shown})", retry=False)
    return allowed


def _refused(address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return (
        address.is_link_local or address.is_multicast or address.is_unspecified
        or address in REFUSED_ADDRESSES
    )  # fmt: skip


async def _resolve(host: str, port: int) -> list[str]:
    infos = await asyncio.get_running_loop().getaddrinfo(
        host, port, type=socket.SOCK_STREAM, proto=socket.IPPROTO_TCP
    )
    return list(dict.fromkeys(str(info[4][0]) for info in infos))


def _default_context() -> ssl.SSLContext:
    context = ssl.create_default_context()  # the system's CAs, host names checked
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    return context


def _origin_of(url: str) -> Origin:
    parts = urlsplit(url)
    origin = _origin(parts.scheme, parts.netloc)
    assert not isinstance(origin, str), "a validated URL has a valid origin"
    return origin


def _request_target(url: str) -> str:
    parts = urlsplit(url)
    return (parts.path or "/") + (f"?{parts.query}" if parts.query else "")


def _request(origin: Origin, target: str, body: bytes, timestamp: str, signature: str) -> bytes:
    head = (
        f"POST {target} HTTP/1.1\r\nHost: {_authority(origin)}\r\nUser-Agent: {USER_AGENT}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\nConnection: close\r\n"
        f"{TIMESTAMP_HEADER}: {timestamp}\r\n{SIGNATURE_HEADER}: {signature}\r\n\r\n"
    )
    return head.encode("ascii") + body


class _Head:
    """httptools callbacks: the final (non-1xx) status and its Retry-After."""

    def __init__(self) -> None:
        self.parser = httptools.HttpResponseParser(self)
        self.status: int | None = None
        self.retry_after: bytes | None = None

    def on_message_begin(self) -> None:
        self.retry_after = None

    def on_header(self, name: bytes, value: bytes) -> None:
        if name.lower() == b"retry-after":
            self.retry_after = value

    def on_headers_complete(self) -> None:
        status = self.parser.get_status_code()
        # A 1xx (100 Continue, 103 Early Hints) is followed by the real answer; the first real one counts.
        if status >= 200 and self.status is None:
            self.status = status


async def _read_head(reader: asyncio.StreamReader, clock: Callable[[], float]) -> tuple[int, float | None]:
    """The response's status and Retry-After, reading at most MAX_RESPONSE_HEAD bytes, never the body."""
    head, received = _Head(), 0
    while head.status is None:
        chunk = await reader.read(4096)
        if not chunk:
            raise _Failed("the connection closed before a complete answer", retry=True)
        received += len(chunk)
        try:
            head.parser.feed_data(chunk)
        except httptools.HttpParserError:
            if head.status is None:  # what follows a complete head is the body, which is not read
                raise _Failed("the answer is not valid HTTP/1.1", retry=True) from None
        if head.status is None and received >= MAX_RESPONSE_HEAD:
            raise _Failed(f"the answer's head exceeds {MAX_RESPONSE_HEAD} bytes", retry=True)
    return head.status, _retry_after(head.retry_after, clock)


def _retry_after(value: bytes | None, clock: Callable[[], float]) -> float | None:
    """Seconds from a Retry-After of delay-seconds or an HTTP date; None if absent or unreadable."""
    if value is None:
        return None
    text = value.decode("latin-1").strip()
    if text.isdigit():
        return float(text) if len(text) <= 10 else None
    try:
        when = parsedate_to_datetime(text)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        return None
    return max(0.0, when.timestamp() - clock())


async def _close(writer: asyncio.StreamWriter) -> None:
    writer.close()
    # A receiver that ignores TLS close_notify must not hold the worker: the answer is in hand.
    with contextlib.suppress(OSError, TimeoutError):
        async with asyncio.timeout(1.0):
            await writer.wait_closed()


def _describe(err: BaseException) -> str:
    if isinstance(err, ssl.SSLCertVerificationError):
        return f"TLS certificate not accepted ({err.verify_message})"
    if isinstance(err, OSError) and err.strerror:
        return err.strerror
    return type(err).__name__
