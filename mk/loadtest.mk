# Load tests (issue 5): locust with SLO gates. `make loadtest` runs a profile against a server already
# listening (LOADTEST_TARGET); `make loadtest-bench` measures the req/s of one and two locust workers.
LOADTEST_TARGET ?= http://127.0.0.1:8080
LOADTEST_GRPC_TARGET ?=
LOADTEST_PROFILE ?= smoke
LOADTEST_SLO ?= loadtests/slo.yaml
LOADTEST_WORKERS ?= 0

.PHONY: loadtest loadtest-bench

loadtest: setup
	$(BIN)/servectl loadtest --target $(LOADTEST_TARGET) --profile $(LOADTEST_PROFILE) --slo $(LOADTEST_SLO) \
	  --workers $(LOADTEST_WORKERS) $(if $(LOADTEST_GRPC_TARGET),--grpc-target $(LOADTEST_GRPC_TARGET),)

loadtest-bench: setup
	$(BIN)/python benchmarks/loadtest.py
