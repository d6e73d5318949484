# A real OpenTelemetry Collector for the tracing tests (tests/serving_image/test_tracing.py): the OTLP
# receiver and the file exporter, built from the collector's Go modules pinned in
# tests/serving_image/otelcol/go.mod into .tools/bin by `make setup`.
OTELCOL := $(TOOLS)/bin/otelcol-test
OTELCOL_SRC := tests/serving_image/otelcol

SETUP_TARGETS += $(OTELCOL)

$(OTELCOL): $(OTELCOL_SRC)/main.go $(OTELCOL_SRC)/go.mod $(OTELCOL_SRC)/go.sum
	mkdir -p $(@D)
	cd $(OTELCOL_SRC) && GOFLAGS=-buildvcs=false go build -trimpath -o $(abspath $@) .
