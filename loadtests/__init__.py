"""Load tests: locust suites with SLO pass/fail gates and reports."""
