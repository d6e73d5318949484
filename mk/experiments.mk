# Experiments (issue 6): the rules file that both the stacks' PrometheusRule and the local Prometheus of
# `servectl experiment` load, checked and unit-tested by promtool (Debian's prometheus package, which also
# provides the Prometheus the end-to-end tests and the demo start on loopback).
APT_PACKAGES += prometheus
EXPERIMENT_RULES := stacks/monitoring/rules

TEST_TARGETS += experiments-check-rules

.PHONY: experiments-check-rules experiments-simulate experiments-rollouts

experiments-check-rules: $(STAMPS)/apt
	promtool check rules $(EXPERIMENT_RULES)/serving-rules.yaml
	cd $(EXPERIMENT_RULES) && promtool test rules serving-rules_test.yaml
	promtool check rules $(EXPERIMENT_RULES)/experiment-rules.yaml
	cd $(EXPERIMENT_RULES) && promtool test rules experiment-rules_test.yaml

# Simulated false-positive rate, SRM detection and power of the sequential tests (fixed seeds).
experiments-simulate: setup
	$(BIN)/python benchmarks/experiments.py

# The whole decision run at every interval of simulated rollouts: the acceptance table (fixed seeds).
experiments-rollouts: setup
	$(BIN)/python benchmarks/experiment_rollouts.py
