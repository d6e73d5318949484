"""The local Prometheus's scrape wait, against a real Prometheus and real /metrics endpoints."""

import json
import urllib.parse
import urllib.request
from dataclasses import replace

import pytest
from prometheus_client import CollectorRegistry, start_http_server

from servectl.experiments.local_prometheus import free_port, local_prometheus


def _targets_up(url: str) -> float:
    query = urllib.parse.urlencode({"query": "count(up == 1)"})
    with urllib.request.urlopen(f"{url}/api/v1/query?{query}", timeout=5) as answer:
        result = json.loads(answer.read())["data"]["result"]
    return float(result[0]["value"][1]) if result else 0.0


def test_waiting_for_a_scrape_counts_the_targets_not_only_the_series_there_are() -> None:
    # Before Prometheus first tries a target, the target has no `up` series at all, so `min(up) == 1`
    # holds over the others alone. Here a wait that expects two targets meets a Prometheus that has one:
    # it must not return, and it must return once told there is one.
    port = free_port()
    server = start_http_server(port, addr="127.0.0.1", registry=CollectorRegistry())[0]
    try:
        with local_prometheus([f"127.0.0.1:{port}"]) as prom:
            prom.wait_for_scrape(timeout=20)
            assert _targets_up(prom.url) == 1
            expecting_two = replace(prom, targets=2)
            with pytest.raises(TimeoutError, match="did not scrape every target"):
                expecting_two.wait_for_scrape(timeout=3)
    finally:
        server.shutdown()


def test_a_target_that_is_down_is_waited_for_until_the_timeout() -> None:
    up, down = free_port(), free_port()
    server = start_http_server(up, addr="127.0.0.1", registry=CollectorRegistry())[0]
    try:
        with (
            local_prometheus([f"127.0.0.1:{up}", f"127.0.0.1:{down}"]) as prom,
            pytest.raises(TimeoutError, match="did not scrape every target"),
        ):
            prom.wait_for_scrape(timeout=3)
    finally:
        server.shutdown()
