"""How many requests per second locust drives against the serving image here: one worker, then two.

Starts the server on the bundled models (loopback, free ports), runs a constant, think-free REST load with
a master and 1, then 2 workers (`servectl loadtest --workers N`), and prints req/s, latency and the ratio
measured in this run. The server shares the machine's cores with the load generator, so the ratio says how
far a second worker helps on this machine, not on a cluster (for that, see stacks/components/load_test.py).

    .venv/bin/python benchmarks/loadtest.py [--users 32] [--duration 15] [--server-workers 1]
"""

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path

from benchmarks.processes import free_port, running_server
from loadtests.run import LoadTest, run

ROOT = Path(__file__).resolve().parents[1]
MODELS = ROOT / "serving_image" / "models"
MODEL = "tabular-classifier"

PROFILE = """
bench:
  description: a constant, think-free REST load for the benchmark
  shape: {{kind: constant, users: {users}, duration_s: {duration}}}
  traffic: {{protocols: {{rest: 1}}, models: {{{model}: 1}}, user_ids: 1000}}
"""
SLO = "overall: {min_requests: 1}\n"


def measure(target: str, workers: int, folder: Path, users: int, duration: float) -> dict[str, float]:
    """One run's overall figures from its gates.json."""
    profiles, slo = folder / "profiles.yaml", folder / "slo.yaml"
    profiles.write_text(PROFILE.format(users=users, duration=duration, model=MODEL))
    slo.write_text(SLO)
    out = folder / f"workers-{workers}"
    test = LoadTest(
        target=target, profile="bench", profile_file=profiles, slo_file=slo, out=out, workers=workers
    )
    code = run(test, lambda line: None)
    if code != 0:
        sys.exit(f"the load test with {workers} worker(s) failed (exit {code}); see {out}")
    measured = json.loads((out / "gates.json").read_text())["measured"]["overall"]
    logs = " ".join(p.read_text(errors="replace") for p in out.glob("*.log"))
    return {
        # locust warns when a worker's process passes 90% of a core: then the generator is the limit
        "cpu_bound": float("CPU usage" in logs),
        "rps": measured["rps"],
        "requests": measured["requests"],
        "failures": measured["failures"],
        "p50_ms": measured["latency_ms"]["p50"],
        "p99_ms": measured["latency_ms"]["p99"],
    }


def main() -> None:
    """Run both measurements and print the table and the ratio."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--users", type=int, default=32, help="locust users in all (split across workers)")
    parser.add_argument("--duration", type=float, default=15.0, help="seconds of load per measurement")
    parser.add_argument("--server-workers", type=int, default=1, help="server processes (--workers)")
    args = parser.parse_args()
    http, grpc = free_port(), free_port()
    command = [sys.executable, "-m", "serving_image", "--model-repository", str(MODELS),
               "--host", "127.0.0.1", "--http-port", str(http), "--grpc-port", str(grpc),
               "--workers", str(args.server_workers), "--no-access-log"]  # fmt: skip
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        ready = f"http://127.0.0.1:{http}/v2/health/ready"
        with running_server("server", command, ready, log_dir=folder, cwd=ROOT):
            for workers in (1, 2):
                results[workers] = measure(
                    f"http://127.0.0.1:{http}", workers, folder, args.users, args.duration
                )
    print(f"locust against the serving image: {args.users} users, {args.duration:.0f} s, REST, model {MODEL}")
    print(f"machine: {os.cpu_count()} cores, load average {os.getloadavg()[0]:.2f}; server processes: "
          f"{args.server_workers}")  # fmt: skip
    header = ("workers", "req/s", "requests", "failures", "p50 ms", "p99 ms")
    print(" ".join(f"{h:>9}" for h in header) + "  locust CPU")
    for workers, r in results.items():
        cpu = "over 90% (the generator limits)" if r["cpu_bound"] else "under 90%"
        figures = (r["rps"], r["requests"], r["failures"], r["p50_ms"], r["p99_ms"])
        print(f"{workers:>9} " + " ".join(f"{f:>9.0f}" for f in figures) + f"  {cpu}")
    print(f"two workers / one worker: {results[2]['rps'] / results[1]['rps']:.2f}x")


if __name__ == "__main__":
    main()
