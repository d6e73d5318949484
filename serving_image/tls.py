"""TLS and mutual TLS for both ports, with the certificate reloaded while serving.

The server's certificate chain and key (and, for mutual TLS, the CA that signs client
certificates) are read from files, as Kubernetes and cert-manager mount them. The files are
watched: when one changes (a new mtime, size or inode: a Secret update swaps a symlink), or on
SIGHUP, they are read again, and every handshake from then on uses the new material; the
connections already open keep theirs. A half-written or mismatched set is refused, logged, and
the old material kept, so a rotation in progress never takes the server down.

Each listener gets an ``ssl.SSLContext`` whose ``sni_callback`` hands each new connection the
current material's context (it runs for every ClientHello, with or without SNI); the two differ
only in ALPN (http/1.1 for REST, h2 for gRPC).
"""

import asyncio
import hashlib
import os
import ssl
from dataclasses import dataclass
from pathlib import Path

from serving_image.access_log import log_event
from serving_image.settings import Settings

# HTTP/1.1 only on the REST port: uvicorn's httptools protocol speaks nothing else; h2 on the gRPC port.
HTTP_ALPN = ("http/1.1",)
GRPC_ALPN = ("h2",)


class TlsConfigError(Exception):
    """The TLS files cannot be read or do not make a usable server configuration."""


@dataclass(frozen=True, slots=True)
class TlsFiles:
    """Where the server's TLS material lives."""

    cert: Path
    """PEM certificate chain, the server's own certificate first."""
    key: Path
    """PEM private key of that certificate, unencrypted."""
    client_ca: Path | None
    """PEM CA bundle for client certificates; set, every client must present one it signed."""

    @classmethod
    def from_settings(cls, settings: Settings) -> "TlsFiles | None":
        """The files the settings name, or None when TLS is off."""
        if settings.tls_cert is None or settings.tls_key is None:
            return None
        return cls(settings.tls_cert, settings.tls_key, settings.tls_client_ca)

    def paths(self) -> tuple[Path, ...]:
        """Every file, in a fixed order."""
        return (self.cert, self.key) if self.client_ca is None else (self.cert, self.key, self.client_ca)


@dataclass(frozen=True, slots=True)
class Material:
    """One consistent reading of the TLS files, and the REST context built from it."""

    cert_chain: bytes
    key: bytes
    client_ca: bytes | None
    context: ssl.SSLContext
    grpc_context: ssl.SSLContext
    fingerprint: str
    """SHA-256 of the server certificate (DER), as ``openssl x509 -fingerprint -sha256`` prints it."""


def _signature(files: TlsFiles) -> tuple[tuple[int, int, int, int], ...]:
    """What changes when a file is replaced, rewritten or re-linked."""
    signature = []
    for path in files.paths():
        try:
            stat = path.stat()
        except OSError:
            signature.append((-1, -1, -1, -1))
            continue
        signature.append((stat.st_mtime_ns, stat.st_size, stat.st_ino, stat.st_dev))
    return tuple(signature)


def _read(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError as error:
        raise TlsConfigError(f"cannot read {path}: {error.strerror or error}") from None


def server_context(
    files: TlsFiles, client_ca: bytes | None, alpn: tuple[str, ...] = HTTP_ALPN
) -> ssl.SSLContext:
    """A TLS 1.2+ server context for the files; with ``client_ca``, client certificates are required."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.set_alpn_protocols(list(alpn))
    try:
        context.load_cert_chain(files.cert, files.key)
    except (ssl.SSLError, OSError) as error:
        raise TlsConfigError(
            f"{files.cert} and {files.key} are not a PEM certificate chain and its unencrypted key: {error}"
        ) from None
    if client_ca is not None:
        try:
            context.load_verify_locations(cadata=client_ca.decode("ascii"))
        except (ssl.SSLError, ValueError) as error:
            raise TlsConfigError(f"{files.client_ca} is not a PEM CA bundle: {error}") from None
        context.verify_mode = ssl.CERT_REQUIRED
    return context


def load_material(files: TlsFiles) -> Material:
    """Read the files and build a context from them; raises ``TlsConfigError`` if they do not fit.

    ``ssl`` loads a certificate only from a path, while gRPC takes bytes: the files are read
    before and after the context is built, and a set that changed meanwhile (a rotation being
    written) is refused, so both transports always serve the same certificate.
    """
    before = tuple(_read(path) for path in files.paths())
    client_ca = before[2] if files.client_ca is not None else None
    context = server_context(files, client_ca)
    grpc_context = server_context(files, client_ca, GRPC_ALPN)
    after = tuple(_read(path) for path in files.paths())
    if before != after:
        raise TlsConfigError("the TLS files changed while they were read")
    cert_chain, key = before[0], before[1]
    try:
        leaf = ssl.PEM_cert_to_DER_cert(cert_chain.decode("ascii").split("-----END CERTIFICATE-----")[0]
                                        + "-----END CERTIFICATE-----\n")  # fmt: skip
    except (ValueError, UnicodeDecodeError) as error:
        raise TlsConfigError(f"{files.cert} does not start with a PEM certificate: {error}") from None
    fingerprint = hashlib.sha256(leaf).hexdigest().upper()
    return Material(cert_chain, key, client_ca, context, grpc_context, fingerprint)


class CertificateReloader:
    """The current TLS material, reloaded from the files when they change."""

    def __init__(self, files: TlsFiles) -> None:
        """Load the files now; raises ``TlsConfigError`` if they are unusable (the server must not start)."""
        self.files = files
        self._signature = _signature(files)
        self.material = load_material(files)
        self.generation = 0
        """Counts successful reloads, so the gRPC fetcher can tell whether anything changed."""
        self._failed_signature: tuple[tuple[int, int, int, int], ...] | None = None
        self._http = server_context(files, self.material.client_ca)
        self._http.sni_callback = self._choose_http
        self._grpc = server_context(files, self.material.client_ca, GRPC_ALPN)
        self._grpc.sni_callback = self._choose_grpc

    def http_context(self) -> ssl.SSLContext:
        """The REST listener's context: each handshake is moved to the current material's context."""
        return self._http

    def grpc_context(self) -> ssl.SSLContext:
        """The gRPC listener's context (ALPN h2), moved to the current material's as the REST one is."""
        return self._grpc

    def _choose_http(self, connection: ssl.SSLObject, _name: str | None, _context: ssl.SSLContext) -> None:
        current = self.material.context
        if connection.context is not current:
            connection.context = current

    def _choose_grpc(self, connection: ssl.SSLObject, _name: str | None, _context: ssl.SSLContext) -> None:
        current = self.material.grpc_context
        if connection.context is not current:
            connection.context = current

    def check(self, force: bool = False) -> bool:
        """Reload if the files changed (or ``force``); whether new material is now served."""
        signature = _signature(self.files)
        if not force and signature in (self._signature, self._failed_signature):
            return False
        try:
            material = load_material(self.files)
        except TlsConfigError as error:
            if signature != self._failed_signature:  # one log line per bad state of the files
                log_event("tls_reload_failed", pid=os.getpid(), reason=str(error),
                          serving_fingerprint=self.material.fingerprint)  # fmt: skip
            self._failed_signature = signature
            return False
        self._signature, self._failed_signature = signature, None
        current = self.material
        if (material.fingerprint, material.client_ca) == (current.fingerprint, current.client_ca):
            return False
        self.material = material
        self.generation += 1
        log_event("tls_reloaded", pid=os.getpid(), fingerprint=material.fingerprint,
                  previous=current.fingerprint, generation=self.generation)  # fmt: skip
        return True

    async def watch(self, interval_seconds: float) -> None:
        """Check the files every ``interval_seconds`` until cancelled."""
        while True:
            await asyncio.sleep(interval_seconds)
            self.check()
