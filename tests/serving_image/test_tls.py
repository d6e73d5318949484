"""TLS and mutual TLS on both ports, with real servers and the real tritonclient clients.

What this proves beyond unit tests of ``serving_image.tls``: that both listeners take the
material as wired (ALPN http/1.1 on REST, h2 on gRPC), that a rotated certificate
reaches new handshakes on both ports while an open connection goes on, and that clients
without the right certificate are refused by the TLS stacks themselves.
"""

import http.client
import os
import signal
import socket
import ssl
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import requests
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient

from serving_image.settings import Settings
from serving_image.tls import CertificateReloader, TlsConfigError, TlsFiles
from tests.serving_image.certs import Authority, Issued, serial_of
from tests.serving_image.conftest import ServerProcess, start_server, wait_until

DATA = np.array([[1.0, 2.0, 3.0, 4.0]], dtype=np.float32)


@dataclass(frozen=True)
class Pki:
    """A CA with a server and a client certificate, and a second CA with its own client."""

    directory: Path
    ca: Authority
    ca_file: Path
    server: Issued
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path
    stranger_cert: Path
    stranger_key: Path


def make_pki(directory: Path) -> Pki:
    """Fresh certificates in ``directory``."""
    ca, other = Authority("test CA"), Authority("some other CA")
    server = ca.issue("localhost", server=True)
    server_cert, server_key = server.write(directory, "server")
    client_cert, client_key = ca.issue("client-1", server=False).write(directory, "client")
    stranger_cert, stranger_key = other.issue("client-1", server=False).write(directory, "stranger")
    return Pki(directory, ca, ca.write(directory / "ca.crt"), server, server_cert, server_key,
               client_cert, client_key, stranger_cert, stranger_key)  # fmt: skip


def tls_flags(pki: Pki, mutual: bool) -> list[str]:
    flags = ["--tls-cert", str(pki.server_cert), "--tls-key", str(pki.server_key)]
    return [*flags, "--tls-client-ca", str(pki.ca_file)] if mutual else flags


def https_probe(pki: Pki, mutual: bool) -> Callable[[ServerProcess, str], requests.Response]:
    cert = (str(pki.client_cert), str(pki.client_key)) if mutual else None

    def probe(server: ServerProcess, path: str) -> requests.Response:
        return requests.get(f"https://{server.http_url}{path}", verify=str(pki.ca_file), cert=cert, timeout=2)

    return probe


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return make_pki(tmp_path_factory.mktemp("pki"))


def _serve(repository: Path, logs: Path, pki: Pki, mutual: bool, *extra: str) -> ServerProcess:
    return start_server(repository, logs, *tls_flags(pki, mutual), *extra, probe=https_probe(pki, mutual))


@pytest.fixture(scope="module")
def tls_server(
    tmp_path_factory: pytest.TempPathFactory, test_repository: Path, pki: Pki
) -> Iterator[ServerProcess]:
    """TLS on both ports, no client certificates asked for."""
    server = _serve(test_repository, tmp_path_factory.mktemp("tls-logs"), pki, False)
    yield server
    assert server.stop() == 0, server.stderr()


@pytest.fixture(scope="module")
def mtls_server(
    tmp_path_factory: pytest.TempPathFactory, test_repository: Path, pki: Pki
) -> Iterator[ServerProcess]:
    """Mutual TLS on both ports: clients need a certificate from the test CA."""
    server = _serve(test_repository, tmp_path_factory.mktemp("mtls-logs"), pki, True)
    yield server
    assert server.stop() == 0, server.stderr()


def http_client(
    server: ServerProcess, pki: Pki, cert: tuple[Path, Path] | None
) -> httpclient.InferenceServerClient:
    options: dict[str, str] = {"ca_certs": str(pki.ca_file)}
    if cert is not None:
        options |= {"certfile": str(cert[0]), "keyfile": str(cert[1])}
    return httpclient.InferenceServerClient(server.http_url, ssl=True, ssl_options=options)


def grpc_client(
    server: ServerProcess, pki: Pki, cert: tuple[Path, Path] | None
) -> grpcclient.InferenceServerClient:
    return grpcclient.InferenceServerClient(
        server.grpc_url, ssl=True, root_certificates=str(pki.ca_file),
        private_key=str(cert[1]) if cert else None, certificate_chain=str(cert[0]) if cert else None,
    )  # fmt: skip


def infer_http(client: httpclient.InferenceServerClient) -> np.ndarray:
    tensor = httpclient.InferInput("x", [1, 4], "FP32")
    tensor.set_data_from_numpy(DATA)
    answer: np.ndarray = client.infer("doubler", [tensor]).as_numpy("y")
    return answer


def infer_grpc(client: grpcclient.InferenceServerClient) -> np.ndarray:
    tensor = grpcclient.InferInput("x", [1, 4], "FP32")
    tensor.set_data_from_numpy(DATA)
    answer: np.ndarray = client.infer("doubler", [tensor], client_timeout=10).as_numpy("y")
    return answer


def peer_serial(port: int, pki: Pki, alpn: str, cert: tuple[Path, Path] | None = None) -> int:
    """The serial of the certificate a new TLS handshake with ``port`` presents."""
    context = ssl.create_default_context(cafile=str(pki.ca_file))
    context.set_alpn_protocols([alpn])
    if cert is not None:
        context.load_cert_chain(cert[0], cert[1])
    with (
        socket.create_connection(("127.0.0.1", port), timeout=5) as raw,
        context.wrap_socket(raw, server_hostname="localhost") as tls,
    ):
        der = tls.getpeercert(binary_form=True)
    assert der is not None, "the server presented no certificate"
    return serial_of(der)


def test_rest_and_grpc_serve_over_tls(tls_server: ServerProcess, pki: Pki) -> None:
    http = http_client(tls_server, pki, None)
    assert http.is_server_ready(), "readiness over HTTPS"
    assert infer_http(http).tolist() == (DATA * 2).tolist(), "inference over HTTPS"
    client = grpc_client(tls_server, pki, None)
    assert client.is_server_ready(), "readiness over gRPC with TLS"
    assert infer_grpc(client).tolist() == (DATA * 2).tolist(), "inference over gRPC with TLS"
    assert peer_serial(tls_server.http_port, pki, "http/1.1") == pki.server.serial
    assert peer_serial(tls_server.grpc_port, pki, "h2") == pki.server.serial
    started = [line for line in tls_server.stderr().splitlines() if '"server_started"' in line]
    assert started and '"tls":"server"' in started[0], started


def test_plain_http_to_the_tls_port_fails_cleanly_and_the_server_goes_on(
    tls_server: ServerProcess, pki: Pki
) -> None:
    started = time.monotonic()
    with pytest.raises(requests.ConnectionError):
        requests.get(f"http://{tls_server.http_url}/v2/health/ready", timeout=5)
    assert time.monotonic() - started < 5, "a plain-HTTP request must be refused at once, not time out"
    plain = grpcclient.InferenceServerClient(tls_server.grpc_url)
    with pytest.raises(Exception, match="UNAVAILABLE"):
        plain.is_server_ready(client_timeout=5)
    assert infer_http(http_client(tls_server, pki, None)).tolist() == (DATA * 2).tolist()
    assert "Traceback" not in tls_server.stderr(), tls_server.stderr()


def test_untrusting_clients_are_refused(tls_server: ServerProcess) -> None:
    with pytest.raises(requests.exceptions.SSLError):
        requests.get(f"https://{tls_server.http_url}/v2/health/ready", timeout=5)  # system CAs only


@pytest.mark.parametrize("protocol", ["rest", "grpc"])
def test_mutual_tls_accepts_a_client_certificate_from_the_ca(
    mtls_server: ServerProcess, pki: Pki, protocol: str
) -> None:
    cert = (pki.client_cert, pki.client_key)
    if protocol == "rest":
        answer = infer_http(http_client(mtls_server, pki, cert))
    else:
        answer = infer_grpc(grpc_client(mtls_server, pki, cert))
    assert answer.tolist() == (DATA * 2).tolist(), f"{protocol} with a client certificate"


@pytest.mark.parametrize("who", ["no certificate", "another CA"])
def test_mutual_tls_refuses_rest_clients_without_a_trusted_certificate(
    mtls_server: ServerProcess, pki: Pki, who: str
) -> None:
    cert = None if who == "no certificate" else (str(pki.stranger_cert), str(pki.stranger_key))
    with pytest.raises(requests.ConnectionError):
        requests.get(
            f"https://{mtls_server.http_url}/v2/health/ready", verify=str(pki.ca_file), cert=cert, timeout=5
        )


@pytest.mark.parametrize("who", ["no certificate", "another CA"])
def test_mutual_tls_refuses_grpc_clients_without_a_trusted_certificate(
    mtls_server: ServerProcess, pki: Pki, who: str
) -> None:
    cert = None if who == "no certificate" else (pki.stranger_cert, pki.stranger_key)
    client = grpc_client(mtls_server, pki, cert)
    with pytest.raises(Exception, match="UNAVAILABLE"):
        client.is_server_ready(client_timeout=5)
    assert infer_grpc(grpc_client(mtls_server, pki, (pki.client_cert, pki.client_key))).size == 4


def replace_atomically(source: Issued, cert: Path, key: Path) -> None:
    """Write a new pair beside the old and rename it over, as a Secret update or cert-manager does."""
    for path, data in ((key, source.key_pem), (cert, source.cert_pem)):
        temporary = path.with_suffix(".new")
        temporary.write_bytes(data)
        os.replace(temporary, path)


def wait_for_serial(port: int, pki: Pki, alpn: str, serial: int, seconds: float = 10) -> int:
    deadline = time.monotonic() + seconds
    seen = peer_serial(port, pki, alpn)
    while seen != serial and time.monotonic() < deadline:
        time.sleep(0.1)
        seen = peer_serial(port, pki, alpn)
    return seen


@pytest.mark.parametrize("trigger", ["file watch", "SIGHUP"])
def test_a_rotated_certificate_reaches_new_handshakes_while_open_connections_go_on(
    tmp_path: Path, test_repository: Path, trigger: str
) -> None:
    pki = make_pki(tmp_path / "pki")
    interval = "0.2" if trigger == "file watch" else "0"
    server = _serve(test_repository, tmp_path / "logs", pki, False, "--tls-reload-seconds", interval)
    try:
        context = ssl.create_default_context(cafile=str(pki.ca_file))
        kept = http.client.HTTPSConnection("127.0.0.1", server.http_port, context=context, timeout=5)
        kept.request("GET", "/v2/health/ready")
        assert kept.getresponse().read() and kept.sock is not None
        old_serial = serial_of(kept.sock.getpeercert(binary_form=True))

        rotated = pki.ca.issue("localhost", server=True)
        replace_atomically(rotated, pki.server_cert, pki.server_key)
        if trigger == "SIGHUP":
            server.process.send_signal(signal.SIGHUP)
        assert wait_for_serial(server.http_port, pki, "http/1.1", rotated.serial) == rotated.serial
        assert peer_serial(server.grpc_port, pki, "h2") == rotated.serial, "gRPC's next handshake"
        assert infer_grpc(grpc_client(server, pki, None)).size == 4, "a new gRPC client after rotation"

        kept.request("GET", "/v2/health/ready")
        assert kept.getresponse().status == 200, "the connection opened before rotation goes on"
        assert serial_of(kept.sock.getpeercert(binary_form=True)) == old_serial == pki.server.serial
        assert '"tls_reloaded"' in server.stderr()
    finally:
        assert server.stop() == 0, server.stderr()


def test_a_broken_rotation_keeps_the_old_certificate(tmp_path: Path, test_repository: Path) -> None:
    pki = make_pki(tmp_path / "pki")
    server = _serve(test_repository, tmp_path / "logs", pki, False, "--tls-reload-seconds", "0.2")
    try:
        stray = pki.ca.issue("localhost", server=True)
        pki.server_cert.write_bytes(stray.cert_pem)  # the key is not written: the pair does not match
        wait_until(lambda: '"tls_reload_failed"' in server.stderr(), 10, "a mismatched pair is logged")
        assert peer_serial(server.http_port, pki, "http/1.1") == pki.server.serial, "the old one is kept"
        assert peer_serial(server.grpc_port, pki, "h2") == pki.server.serial
        pki.server_key.write_bytes(stray.key_pem)  # the rotation completes
        assert wait_for_serial(server.http_port, pki, "http/1.1", stray.serial) == stray.serial
    finally:
        assert server.stop() == 0, server.stderr()


def test_unusable_tls_files_stop_the_start_up(tmp_path: Path, test_repository: Path) -> None:
    pki = make_pki(tmp_path / "pki")
    with pytest.raises(AssertionError, match="exited with 2"):
        start_server(test_repository, tmp_path / "logs", "--tls-cert", str(pki.server_cert),
                     "--tls-key", str(pki.client_key), probe=https_probe(pki, False))  # fmt: skip


# Unit tests of serving_image.tls: no server.


def test_the_reloader_reloads_only_changed_valid_files(tmp_path: Path) -> None:
    pki = make_pki(tmp_path)
    reloader = CertificateReloader(TlsFiles(pki.server_cert, pki.server_key, pki.ca_file))
    assert not reloader.check(), "nothing changed"
    first = reloader.material
    replace_atomically(pki.ca.issue("localhost", server=True), pki.server_cert, pki.server_key)
    assert reloader.check(), "a new pair is taken"
    assert reloader.generation == 1 and reloader.material.fingerprint != first.fingerprint
    pki.server_key.write_bytes(pki.ca.issue("x", server=True).key_pem)
    assert not reloader.check(), "a mismatched pair is refused"
    assert reloader.generation == 1


def test_tls_settings_must_come_in_pairs() -> None:
    with pytest.raises(ValueError, match="both tls_cert and tls_key"):
        Settings(tls_cert=Path("/a.crt"))
    with pytest.raises(ValueError, match="needs tls_cert"):
        Settings(tls_client_ca=Path("/ca.crt"))


def test_files_that_are_not_a_key_pair_are_refused(tmp_path: Path) -> None:
    pki = make_pki(tmp_path)
    with pytest.raises(TlsConfigError, match="not a PEM certificate chain"):
        CertificateReloader(TlsFiles(pki.server_cert, pki.client_key, None))
    with pytest.raises(TlsConfigError, match="cannot read"):
        CertificateReloader(TlsFiles(tmp_path / "missing.crt", pki.server_key, None))


def _healthcheck(server: ServerProcess, env: dict[str, str]) -> int:
    """The container's HEALTHCHECK command, run as a process against ``server``."""
    run_env = {**os.environ, "SERVING_HTTP_PORT": str(server.http_port), **env}
    command = [sys.executable, "-m", "serving_image.healthcheck"]
    return subprocess.run(command, env=run_env, timeout=20, check=False).returncode


def test_container_healthcheck_speaks_tls_when_the_server_does(tls_server: ServerProcess, pki: Pki) -> None:
    assert _healthcheck(tls_server, {"SERVING_TLS_CERT": str(pki.server_cert)}) == 0, "ready over TLS"
    assert _healthcheck(tls_server, {"SERVING_TLS_CERT": ""}) == 1, "plain HTTP to a TLS port is not ready"


def test_container_healthcheck_under_mutual_tls_needs_a_client_certificate(
    mtls_server: ServerProcess, pki: Pki
) -> None:
    tls = {"SERVING_TLS_CERT": str(pki.server_cert)}
    assert _healthcheck(mtls_server, tls) == 1, "the server refuses a probe without a client certificate"
    client = {
        "SERVING_HEALTHCHECK_CLIENT_CERT": str(pki.client_cert),
        "SERVING_HEALTHCHECK_CLIENT_KEY": str(pki.client_key),
    }
    assert _healthcheck(mtls_server, tls | client) == 0, "a trusted client certificate passes"
