"""Experiments: statistically sound A/B analysis and progressive rollout on a real Prometheus.

`stats` (SRM, always-valid sequential tests, a rank test on histograms) · `simulation` (their guarantees,
measured) · `promql` (exact per-version counts) · `decision` (promote, hold, roll back, complete) ·
`weights_file` and `targets` (where weights live and how they apply) · `log` (the JSON-lines audit trail) ·
`run` (one analysis and step) · `local_prometheus` and `load` (real processes, bounded) · `demo`.
"""

from servectl.experiments.demo import demo_phase

__all__ = ["demo_phase"]
