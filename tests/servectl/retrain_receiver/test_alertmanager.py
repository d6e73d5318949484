"""The receiver behind a real Alertmanager (Debian's prometheus-alertmanager) on loopback.

Alerts are posted to Alertmanager's v2 API as Prometheus would; Alertmanager routes them with the
monitoring stack's own config (`stacks.manifests.monitoring.alertmanager_config` with the retrain
route, timings shortened) to `servectl retrain-receiver` running as a process, which runs a stand-in
retrain command. What the in-process tests cannot show: that the stack's route matches the alerts, that
Alertmanager's real webhook payloads parse, that its repeats do not stack retrains, and the command line.
"""

import http.client
import json
import os
import sys
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import yaml

from servectl.drift.processes import receiver
from servectl.experiments.local_prometheus import free_port
from servectl.retrain_receiver.local_alertmanager import RunningAlertmanager, local_alertmanager
from stacks.manifests import monitoring as mon

pytestmark = pytest.mark.slow

MODEL = "tabular-classifier"
DATA = "s3://model-bucket/training/tabular-classifier/labelled.csv"
STUB = Path(__file__).with_name("stub_retrain.py")
WAIT = 30.0


def wait_for(what: str, check: Callable[[], bool], timeout: float = WAIT) -> None:
    """Poll `check` until it holds; fail naming `what` after `timeout` s."""
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def lines(path: Path) -> list[dict[str, Any]]:
    """The complete JSON lines of a file another process is appending to (a last line may be partial)."""
    text = path.read_text() if path.exists() else ""
    complete = text[: text.rfind("\n") + 1]
    out = []
    for line in complete.splitlines():
        try:
            out.append(json.loads(line))
        except json.JSONDecodeError as error:
            raise AssertionError(f"{path}: not a JSON line: {line!r}") from error
    return out


def alertmanager_config(webhook: str) -> dict[str, Any]:
    """The stack's config, its people receiver a closed port, every wait shortened to a second."""
    config = mon.alertmanager_config(mon.Receivers(webhook_urls=("http://127.0.0.1:9/",)), webhook)
    for route in (config["route"], *config["route"]["routes"]):
        route.update(group_wait="0s", group_interval="1s", repeat_interval="1s")
    return config


class Loop:
    """Alertmanager, the receiver process and the stand-in command's records."""

    def __init__(self, alertmanager: RunningAlertmanager, port: int, records: Path, log: Path) -> None:
        self.alertmanager, self.port, self.records, self.log = alertmanager, port, records, log

    def runs(self) -> list[dict[str, Any]]:
        return lines(self.records / "runs.jsonl")

    def events(self, name: str) -> list[dict[str, Any]]:
        return [e for e in lines(self.log) if e["event"] == name]

    def alert(self, name: str, starts: str, model: str = MODEL, **labels: str) -> dict[str, Any]:
        return {"labels": {"alertname": name, "model": model, "version": "1", **labels}, "startsAt": starts}


@pytest.fixture
def loop(tmp_path: Path) -> Iterator[Loop]:
    records = tmp_path / "records"
    records.mkdir()
    os.mkfifo(records / "gate")
    config = tmp_path / "receiver.yaml"
    config.write_text(
        yaml.safe_dump(
            {"command": [sys.executable, str(STUB), str(records)], "models": {MODEL: {"data": DATA}}}
        )
    )
    port = free_port()
    log = tmp_path / "receiver.log"
    with (
        receiver(config, port, log),
        local_alertmanager(alertmanager_config(f"http://127.0.0.1:{port}/alerts"), tmp_path / "am.log") as am,
    ):
        yield Loop(am, port, records, log)


def release_first_run(loop: Loop) -> None:
    """Open the FIFO the first run waits on and write to it."""
    (loop.records / "gate").write_text("go\n")


def now() -> str:
    return datetime.now(UTC).replace(microsecond=0).strftime("%Y-%m-%dT%H:%M:%SZ")


def test_the_stacks_route_brings_each_retraining_alert_to_one_run_with_the_contracts_arguments(
    loop: Loop,
) -> None:
    starts = now()
    loop.alertmanager.post_alerts(
        [
            loop.alert("ModelInputDriftCritical", starts, feature="mean_radius"),
            loop.alert("ModelQualityDrop", starts),
            loop.alert("ModelInputDriftWarning", starts, feature="mean_radius"),
            loop.alert("ModelQualityDrop", starts, model="unconfigured-model"),
        ]
    )
    wait_for("the first run", lambda: len(loop.runs()) == 1)
    release_first_run(loop)
    wait_for("both retrains", lambda: sum(r.get("exit") == 0 for r in loop.runs()) == 2)
    wait_for("the unconfigured model's alert", lambda: bool(loop.events("alert_ignored")))
    published = [r["trigger"] for r in loop.runs() if r.get("exit") == 0]
    started = {tuple(r["argv"]) for r in loop.runs() if r["event"] == "start"}
    expected = {
        ("--model", MODEL, "--data", DATA, "--trigger", f"{name}:{MODEL}:1:{starts}")
        for name in ("ModelInputDriftCritical", "ModelQualityDrop")
    }
    # The warning is not routed to the receiver; the unconfigured model's alert is, and is ignored.
    assert started == expected, f"command lines {started}, expected {expected}"
    assert len(published) == len(set(published)) == 2, f"a trigger was published twice: {published}"
    [ignored] = {e["labels"]["model"] for e in loop.events("alert_ignored")}
    assert ignored == "unconfigured-model", loop.events("alert_ignored")
    assert not any(r.get("overlap") for r in loop.runs()), "two retrains of one model overlapped"


def test_alertmanagers_repeats_run_one_at_a_time_and_the_command_skips_a_handled_key(loop: Loop) -> None:
    starts = now()
    loop.alertmanager.post_alerts([loop.alert("ModelInputDriftCritical", starts, feature="mean_radius")])
    wait_for("the first run", lambda: len(loop.runs()) == 1)
    wait_for("two repeats while it runs", lambda: len(loop.events("retrain_already_running")) >= 2)
    release_first_run(loop)
    wait_for("a repeat after it", lambda: len(loop.events("retrain_finished")) >= 3)
    finished = loop.events("retrain_finished")
    key = f"ModelInputDriftCritical:{MODEL}:1:{starts}"
    assert {e["trigger"] for e in finished} == {key}, finished
    outcomes = [(e["exit_code"], e["outcome"]) for e in finished]
    assert outcomes[0] == (0, "published") and set(outcomes[1:]) == {(4, "skipped")}, outcomes
    assert not any(r.get("overlap") for r in loop.runs()), "a repeat started a second retrain alongside"


def test_a_malformed_payload_gets_400_json_from_the_process(loop: Loop) -> None:
    conn = http.client.HTTPConnection("127.0.0.1", loop.port, timeout=5)
    conn.request("POST", "/alerts", body=b'{"version": "4", "alerts": [{}]}')
    response = conn.getresponse()
    body = json.loads(response.read())
    assert response.status == 400 and "payload.alerts[0].status" in body["error"], (response.status, body)


def test_sigterm_stops_the_receiver_cleanly_and_logs_it(tmp_path: Path) -> None:
    config = tmp_path / "receiver.yaml"
    config.write_text(yaml.safe_dump({"models": {MODEL: {"data": DATA}}}))
    log = tmp_path / "receiver.log"
    with receiver(config, free_port(), log) as process:
        process.terminate()
        assert process.wait(timeout=WAIT) == 0, f"exit {process.returncode}: {log.read_text()}"
    stopped = [e for e in lines(log) if e["event"] == "receiver_stopped"]
    assert stopped == [stopped[0]] and stopped[0]["interrupted"][MODEL] == {
        "running": None,
        "queued": None,
    }, stopped
