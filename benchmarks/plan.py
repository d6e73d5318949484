"""Times the offline plan of every shipped stack (one process, as `servectl plan --all` runs) and prints
it."""

import time

started = time.perf_counter()

from stacks.preview.run import layers_of, plan_stack, stack_names  # noqa: E402 - the import is timed


def main() -> None:
    """Plan each layer of each stack and print per-plan and total wall time.

    A platform plan of an AWS stack reads its infra layer's exports (the StackReference); the infra plan just
    before it left them in the process, as `pulumi preview` of the platform reads the infra stack's state.
    """
    imported = time.perf_counter()
    rows = []
    for stack in stack_names():
        for layer in layers_of(stack):
            t0 = time.perf_counter()
            plan = plan_stack(stack, layer=layer)
            rows.append((f"{stack} {layer}", len(plan.document["steps"]), time.perf_counter() - t0))
    total = time.perf_counter() - started
    print(f"{'plan':20s} {'steps':>6s} {'seconds':>8s}")
    for name, steps, seconds in rows:
        print(f"{name:20s} {steps:6d} {seconds:8.2f}")
    print(f"imports {imported - started:.2f} s; all {len(rows)} plans in {total:.2f} s")


if __name__ == "__main__":
    main()
