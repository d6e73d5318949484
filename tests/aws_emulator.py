"""moto's server mode on loopback: the local AWS API emulator the tests use where the cloud's own APIs cannot
be reached (S3, KMS, STS, ...), never a hand-written fake."""

from collections.abc import Iterator
from contextlib import contextmanager

from moto.server import ThreadedMotoServer


@contextmanager
def moto_server() -> Iterator[str]:
    """A moto server on a free loopback port, stopped on exit; its base URL."""
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    try:
        host, port = server.get_host_and_port()
        yield f"http://{host}:{port}"
    finally:
        server.stop()
