"""The bearer token: read from a named environment variable, refused in one line when unusable, and never
echoed in an error."""

import pytest

from loadtests.auth import AUTH_HEADER, auth_headers, read_token
from loadtests.config import ConfigError


def test_the_token_comes_from_the_named_variable_trimmed() -> None:
    assert read_token("MODEL_API_TOKEN", {"MODEL_API_TOKEN": "abc.def.ghi\n"}) == "abc.def.ghi", (
        "a trailing newline from a secrets file must not reach the header"
    )


@pytest.mark.parametrize("environ", [{}, {"MODEL_API_TOKEN": ""}, {"MODEL_API_TOKEN": "  \n"}])
def test_a_missing_or_empty_variable_names_the_variable(environ: dict[str, str]) -> None:
    with pytest.raises(ConfigError, match=r"^--bearer-token-env: MODEL_API_TOKEN is not set or is empty; "):
        read_token("MODEL_API_TOKEN", environ)


def test_a_token_passed_instead_of_a_name_is_refused_without_echoing_it() -> None:
    token = "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJjaSJ9.c2lnbmF0dXJl"
    with pytest.raises(ConfigError, match="expected the name of an environment variable") as caught:
        read_token(token, {})
    assert token not in str(caught.value) and "eyJ" not in str(caught.value), "the token reached the message"


def test_auth_headers_carry_the_bearer_token_in_lower_case_for_grpc() -> None:
    assert auth_headers("t0k3n") == {"authorization": "Bearer t0k3n"}, auth_headers("t0k3n")
    assert AUTH_HEADER.islower(), "gRPC metadata keys must be lower case"
    assert auth_headers(None) == {} and auth_headers("") == {}, "no token, no header"
