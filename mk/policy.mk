# Policy gate: OPA and Regal at pinned versions, built from their Go modules into
# .tools/bin by `make setup` (never fetched at run time), and the Rego checks `make test` runs.
OPA_VERSION := v1.22.3
REGAL_VERSION := v0.39.0
OPA_COVERAGE_MIN := 95
OPA := $(TOOLS)/bin/opa
REGAL := $(TOOLS)/bin/regal
# Every rule package directory and data/, but not the Python policy pack.
REGO_PATHS := $(filter-out policies/pack policies/__pycache__,$(patsubst %/,%,$(wildcard policies/*/)))

# The Python policy pack's own virtualenv: pulumi-policy pins a protobuf the project's venv
# cannot take. `pulumi preview --policy-pack policies/pack` and the pack's tests use it.
PACK_VENV := $(TOOLS)/policy-pack-venv

SETUP_TARGETS += $(OPA) $(REGAL) $(PACK_VENV)/.installed
TEST_TARGETS += policy-check-rego

.PHONY: policy-check-rego policy-bench

# A marker per pinned version: changing a version rebuilds the tool, deleting .tools too.
$(TOOLS)/versions/opa-$(OPA_VERSION) $(TOOLS)/versions/regal-$(REGAL_VERSION):
	mkdir -p $(@D) $(TOOLS)/bin
	touch $@

$(OPA): $(TOOLS)/versions/opa-$(OPA_VERSION)
	GOBIN=$(abspath $(TOOLS)/bin) GOFLAGS=-buildvcs=false go install github.com/open-policy-agent/opa@$(OPA_VERSION)
	touch $@

# `go install regal@VERSION` asks the module proxy for the module's version list, which is
# refused here; so download the pinned module itself and build it from its own go.mod.
$(REGAL): $(TOOLS)/versions/regal-$(REGAL_VERSION)
	dir=$$(cd $(TOOLS) && go mod download -json github.com/open-policy-agent/regal@$(REGAL_VERSION) \
	  | sed -n 's/^[[:space:]]*"Dir": "\(.*\)",$$/\1/p'); \
	test -n "$$dir"; \
	cd "$$dir" && GOFLAGS=-buildvcs=false go build -trimpath \
	  -ldflags "-X github.com/open-policy-agent/regal/pkg/version.Version=$(REGAL_VERSION)" -o $(abspath $@) .
	touch $@

$(PACK_VENV)/.installed: policies/pack/requirements.txt
	test -x $(PACK_VENV)/bin/python || $(PYTHON) -m venv $(PACK_VENV)
	$(PACK_VENV)/bin/pip install -q -r policies/pack/requirements.txt
	touch $@

# opa fmt (fails on a diff), opa check --strict, opa test with an enforced coverage threshold, Regal.
policy-check-rego: $(OPA) $(REGAL) | $(STAMPS)
	$(OPA) fmt --fail --list policies
	$(OPA) check --strict $(REGO_PATHS)
	$(OPA) test --coverage --threshold $(OPA_COVERAGE_MIN) $(REGO_PATHS) > $(STAMPS)/opa-coverage.json \
	  || { $(OPA) test $(REGO_PATHS); echo "opa test failed or coverage is under $(OPA_COVERAGE_MIN)%"; exit 1; }
	$(OPA) test $(REGO_PATHS)
	@sed -n 's/^  "coverage": \([0-9.]*\),\{0,1\}$$/opa test coverage: \1% (minimum $(OPA_COVERAGE_MIN)%)/p' $(STAMPS)/opa-coverage.json
	$(REGAL) lint --config-file policies/.regal/config.yaml policies

policy-bench: setup
	$(BIN)/python benchmarks/policy.py
