"""The container's HEALTHCHECK: is this server ready? Exit 0 if so, 1 if not.

It reads the same `SERVING_*` variables as the server, so it probes over TLS when the server serves TLS. The
probe goes to 127.0.0.1, inside the container, so it checks the server's certificate against the server's own
certificate rather than a host name; under mutual TLS it needs a client certificate the server trusts, given
by `SERVING_HEALTHCHECK_CLIENT_CERT` and `SERVING_HEALTHCHECK_CLIENT_KEY`.
"""

import os
import ssl
import sys
import urllib.request


def _context() -> ssl.SSLContext | None:
    cert = os.environ.get("SERVING_TLS_CERT")
    if not cert:
        return None
    context = ssl.create_default_context(cafile=cert)
    # The certificate names the service's host, not 127.0.0.1; trusting exactly this certificate (a leaf as
    # its own trust anchor) is the check.
    context.check_hostname = False
    context.verify_flags |= ssl.VERIFY_X509_PARTIAL_CHAIN
    client_cert, client_key = (os.environ.get(f"SERVING_HEALTHCHECK_CLIENT_{k}") for k in ("CERT", "KEY"))
    if client_cert and client_key:
        context.load_cert_chain(client_cert, client_key)
    return context


def main() -> int:
    """Probe `/v2/health/ready` on the REST port; 0 when it answers 200."""
    context = _context()
    scheme = "https" if context else "http"
    port = os.environ.get("SERVING_HTTP_PORT", "8080")
    try:
        url = f"{scheme}://127.0.0.1:{port}/v2/health/ready"
        with urllib.request.urlopen(url, timeout=2, context=context):  # noqa: S310 - scheme is http(s) only
            return 0
    except (OSError, ValueError):
        return 1


if __name__ == "__main__":
    sys.exit(main())
