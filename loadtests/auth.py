"""The bearer token the users send to a gateway that requires one.

The token is read from an environment variable named on the command line, never passed in argv (where `ps`
and CI logs would show it), and never written: not in a report, a log line or a locust command.
"""

import re
from collections.abc import Mapping

from loadtests.config import ConfigError

AUTH_HEADER = "authorization"
"""Lower case for both protocols: gRPC metadata keys must be, and HTTP header names ignore case."""
_VARIABLE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def read_token(variable: str, environ: Mapping[str, str]) -> str:
    """The token in the environment variable `variable`; `ConfigError` if the name or value is unusable."""
    if not _VARIABLE.fullmatch(variable):
        # Not echoed: the likely slip is passing the token itself, which must not reach a log.
        raise ConfigError(
            "--bearer-token-env: expected the name of an environment variable (letters, digits and _), "
            "not the token itself"
        )
    token = environ.get(variable, "").strip()
    if not token:
        raise ConfigError(f"--bearer-token-env: {variable} is not set or is empty; export the token in it")
    return token


def auth_headers(token: str | None) -> dict[str, str]:
    """The header (or gRPC metadata) that carries the token; none without a token."""
    return {AUTH_HEADER: f"Bearer {token}"} if token else {}
