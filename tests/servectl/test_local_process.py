"""servectl.local_process: the failures of starting a local server are errors that name it."""

import subprocess
from pathlib import Path

import pytest

from servectl.experiments.local_prometheus import free_port
from servectl.local_process import running, wait_ready


def test_a_server_that_exits_before_it_is_ready_is_an_error_naming_it(tmp_path: Path) -> None:
    url = f"http://127.0.0.1:{free_port()}"
    with (
        pytest.raises(RuntimeError, match=r"^demo-server exited with code 3 before it was ready$"),
        running("demo-server", ["sh", "-c", "echo starting >&2; exit 3"], url, tmp_path / "err.log"),
    ):
        pass
    assert (tmp_path / "err.log").read_text() == "starting\n", "stderr goes to the log"


def test_a_server_never_ready_times_out_naming_it_and_its_url() -> None:
    url = f"http://127.0.0.1:{free_port()}"
    process = subprocess.Popen(["sleep", "30"])
    try:
        with pytest.raises(TimeoutError, match=rf"^slow-server at {url} was not ready within 0.3 s$"):
            wait_ready("slow-server", url, process, timeout=0.3)
    finally:
        process.kill()
        process.wait()
