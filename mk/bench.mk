# Serving benchmark: ghz, the gRPC load generator of `make bench`, at a pinned version built
# from its Go module into .tools/bin. Without Go, or when the build fails, this only warns:
# benchmarks/serving.py then loads the gRPC path with a Python grpc.aio client and says so.
GHZ_VERSION := v0.120.0
GHZ := $(TOOLS)/bin/ghz
GHZ_MARKER := $(TOOLS)/versions/ghz-$(GHZ_VERSION)

bench: $(GHZ)

# A marker per pinned version, so changing GHZ_VERSION rebuilds ghz.
$(GHZ_MARKER):
	mkdir -p $(@D) $(TOOLS)/bin
	touch $@

$(GHZ): $(GHZ_MARKER)
	@if command -v go >/dev/null 2>&1 && GOBIN=$(abspath $(TOOLS)/bin) GOFLAGS=-buildvcs=false \
	  go install github.com/bojand/ghz/cmd/ghz@$(GHZ_VERSION); then \
	  touch $@; \
	else \
	  echo "warning: ghz $(GHZ_VERSION) could not be installed; make bench will use a grpc.aio client for gRPC" >&2; \
	fi

# Asynchronous inference (issue 16): jobs on Redis Streams against the synchronous path at the same CPU,
# and job latency at 50% and 90% of the async rate (benchmarks/async_jobs.py, about four minutes).
.PHONY: async-bench
async-bench: setup
	$(BIN)/python benchmarks/async_jobs.py

# Drift detection (issue 15 point 8): false alarms and detection delay of the drift alerts, from a seeded
# simulation of the server's sampled binning, the 1h PSI recording rule and the alerts' `for: 15m` (seconds).
.PHONY: drift-detector
drift-detector: setup
	$(BIN)/python benchmarks/drift_detector.py

# Input drift counters (issue 15): request time at drift sample rates 0, 0.1 and 1 on the bundled model, batch 1
# and 64, in one process (benchmarks/drift_overhead.py, about a minute).
.PHONY: drift-bench
drift-bench: setup
	$(BIN)/python benchmarks/drift_overhead.py

# Entity-keyed requests (issue 17): added latency of patient_id against the same features sent, at c=1 and
# c=8, cache hit and miss, against Feast's local SQLite online store (benchmarks/features.py, about a minute).
.PHONY: features-bench
features-bench: setup
	$(BIN)/python benchmarks/features.py
