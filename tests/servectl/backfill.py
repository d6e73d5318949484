"""A real Prometheus holding a chosen history: OpenMetrics text with timestamps is backfilled into blocks
with `promtool tsdb create-blocks-from openmetrics`, and Prometheus starts on them.

Backfilling gives hours of history in a second, so windows, restarts and increases are Prometheus's own
(its range selectors, `increase()`, `last_over_time()` and label matching), not a fake API.
"""

import shutil
import subprocess
from collections import defaultdict
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from servectl.experiments.local_prometheus import RunningPrometheus, local_prometheus


@dataclass
class Exposition:
    """OpenMetrics text with timestamps: families of series, each a list of (time, value)."""

    kinds: dict[str, str] = field(default_factory=dict)
    series: dict[str, dict[str, list[tuple[float, float]]]] = field(
        default_factory=lambda: defaultdict(lambda: defaultdict(list))
    )

    def add(self, family: str, kind: str, labels: dict[str, str], at: float, value: float) -> None:
        """One sample; a counter's family name is without `_total`."""
        self.kinds[family] = kind
        rendered = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
        self.series[family][rendered].append((at, value))

    def text(self) -> str:
        """The exposition, `# EOF` terminated."""
        lines = []
        for family, kind in self.kinds.items():
            lines.append(f"# TYPE {family} {kind}")
            name = f"{family}_total" if kind == "counter" else family
            for labels, points in self.series[family].items():
                lines.extend(f"{name}{{{labels}}} {v:.6f} {t:.3f}" for t, v in points)
        return "\n".join([*lines, "# EOF", ""])


@contextmanager
def backfilled_prometheus(root: Path, text: str) -> Iterator[RunningPrometheus]:
    """Prometheus on blocks backfilled from the OpenMetrics `text`, its files under `root`."""
    promtool = shutil.which("promtool")
    assert promtool, "promtool missing: `make setup` installs Debian's prometheus package"
    source = root / "history.om"
    source.write_text(text)
    data = root / "data"
    done = subprocess.run(
        [promtool, "tsdb", "create-blocks-from", "openmetrics", str(source), str(data)],
        capture_output=True, text=True, check=False, timeout=120,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    with local_prometheus([], storage=data, log=root / "prometheus.log") as running:
        yield running
