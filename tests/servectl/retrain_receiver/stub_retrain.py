"""A stand-in for `servectl retrain` with the contract's exit codes, run by the receiver under test.

`python stub_retrain.py DIR --model M --data URI --trigger KEY`: appends a JSON line per start and end to
DIR/runs.jsonl, notes whether another run was in progress (DIR/lock), exits 4 for a trigger key already
in DIR/handled (the real command's idempotency) and 0 otherwise. If DIR/gate is a FIFO, a first run (no
key handled yet) waits until the test writes to it.
"""

import json
import os
import stat
import sys
from pathlib import Path


def record(directory: Path, entry: dict[str, object]) -> None:
    with (directory / "runs.jsonl").open("a") as out:
        out.write(json.dumps(entry) + "\n")


def main() -> int:
    directory, argv = Path(sys.argv[1]), sys.argv[2:]
    key = argv[argv.index("--trigger") + 1]
    try:
        os.close(os.open(directory / "lock", os.O_CREAT | os.O_EXCL))
        overlap = False
    except FileExistsError:
        overlap = True
    record(directory, {"event": "start", "argv": argv, "overlap": overlap})
    handled = directory / "handled"
    seen = handled.read_text().splitlines() if handled.exists() else []
    gate = directory / "gate"
    if not seen and gate.exists() and stat.S_ISFIFO(gate.stat().st_mode):
        gate.read_text()
    code = 4 if key in seen else 0
    if code == 0:
        with handled.open("a") as out:
            out.write(key + "\n")
        print(f"published {argv[argv.index('--model') + 1]} version 2")
    else:
        print(f"skipped: trigger {key} already handled", file=sys.stderr)
    record(directory, {"event": "end", "trigger": key, "exit": code})
    (directory / "lock").unlink()
    return code


if __name__ == "__main__":
    sys.exit(main())
