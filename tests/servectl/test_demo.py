"""`servectl demo` end to end: it serves, sends real requests, stops the server, and reports."""

import json
from pathlib import Path

from click.testing import CliRunner

from servectl.cli import cli


def test_demo_serves_and_reports(tmp_path: Path) -> None:
    result = CliRunner().invoke(cli, ["demo", "--out", str(tmp_path)])
    assert result.exit_code == 0, result.output
    assert "server stopped with exit code 0" in result.output
    summary = json.loads((tmp_path / "summary.json").read_text())
    split = summary["serving"]["variant_split"]
    assert sum(split.values()) == 200 and split.get("1", 0) > split.get("2", 0), split
    assert "dimension 1 is 3" in summary["serving"]["bad_request_error"]
    access = (tmp_path / "server" / "access.log").read_text().splitlines()
    assert len(access) >= 202, "every demo request is in the access log"


def test_serve_help_is_the_servers_own(tmp_path: Path) -> None:
    result = CliRunner().invoke(cli, ["serve", "--help"])
    assert result.exit_code == 0
    assert "--model-repository" in result.output and "--grpc-port" in result.output
