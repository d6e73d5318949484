"""Times the offline plan of every shipped stack (one process, as `servectl plan --all` runs) and prints
it."""

import time

started = time.perf_counter()

from stacks.preview.run import plan_stack, stack_names  # noqa: E402 - the import is part of what is timed


def main() -> None:
    """Plan each stack and print per-stack and total wall time."""
    imported = time.perf_counter()
    rows = []
    for stack in stack_names():
        t0 = time.perf_counter()
        plan = plan_stack(stack)
        rows.append((stack, len(plan.document["steps"]), time.perf_counter() - t0))
    total = time.perf_counter() - started
    print(f"{'stack':10s} {'steps':>6s} {'seconds':>8s}")
    for stack, steps, seconds in rows:
        print(f"{stack:10s} {steps:6d} {seconds:8.2f}")
    print(
        f"imports {imported - started:.2f} s; all {len(rows)} stacks planned in {total:.2f} s (target < 10 s)"
    )


if __name__ == "__main__":
    main()
