# Two entry points: `make demo` and `make test`. Each sets up what it needs on a
# fresh machine: Debian packages, the virtualenv, pinned tools and the bundled models.
SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := help

PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMPS := .stamps
TOOLS := .tools
MODELS_DIR := serving_image/models
SUDO := $(if $(filter 0,$(shell id -u)),,sudo)

# Debian packages needed by `make test` and `make demo`; fragments in mk/ append to it.
APT_PACKAGES := wrk luajit
# Extra set-up steps fragments in mk/ add (e.g. pinned OPA); `setup` depends on them.
SETUP_TARGETS :=
# Extra checks fragments add to `make test` after the Python lint and type checks.
TEST_TARGETS :=

include $(wildcard mk/*.mk)

.PHONY: help setup demo test lint typecheck pytest models proto bench clean

help:
	@echo "make demo   run the whole platform offline: serve the bundled models and send real requests"
	@echo "make test   lint, type-check and run every test"
	@echo "make bench  run the serving benchmark (wrk) and print the table"

$(STAMPS):
	mkdir -p $(STAMPS)

$(STAMPS)/apt: Makefile $(wildcard mk/*.mk) | $(STAMPS)
	@missing=""; for p in $(APT_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
	  echo "installing Debian packages:$$missing"; \
	  $(SUDO) apt-get update -qq && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq $$missing >/dev/null; \
	fi
	touch $@

$(STAMPS)/venv: pyproject.toml constraints.txt | $(STAMPS)
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -c constraints.txt -e '.[dev]'
	touch $@

# The build also writes the feature repository's data/ (parquet, registry, online store) it trains from.
$(STAMPS)/models: $(STAMPS)/venv serving_image/build_models.py serving_image/model_zoo.py \
  serving_image/drift_profile.py $(wildcard serving_image/features/*.py) \
  $(wildcard serving_image/feature_repo/*.py serving_image/feature_repo/*.yaml) | $(STAMPS)
	$(BIN)/python -m serving_image.build_models --out $(MODELS_DIR)
	touch $@

setup: $(STAMPS)/apt $(STAMPS)/venv $(STAMPS)/models $(SETUP_TARGETS)

models: $(STAMPS)/models

# Regenerate the gRPC stubs from the .proto files (the generated files are committed): the protocol's,
# and the asynchronous inference service's, which imports the protocol's messages.
proto: $(STAMPS)/venv
	cd serving_image/proto && PATH="$(abspath $(BIN)):$$PATH" ../../$(BIN)/python -m grpc_tools.protoc -I. \
	  --python_out=. --grpc_python_out=. --mypy_out=. --mypy_grpc_out=. grpc_predict_v2.proto async_inference.proto
	sed -i 's/^import \(grpc_predict_v2_pb2\|async_inference_pb2\) /from . import \1 /' \
	  serving_image/proto/grpc_predict_v2_pb2_grpc.py* serving_image/proto/async_inference_pb2*.py*
	# A private descriptor pool: the protocol's message names (inference.*) must coexist in one
	# process with tritonclient's copy of the same protocol (tests and load generators load both).
	sed -i 's/_descriptor_pool.Default().AddSerializedFile(/_descriptor_pool.DescriptorPool().AddSerializedFile(/' \
	  serving_image/proto/grpc_predict_v2_pb2.py
	# The jobs' messages use the protocol's (inference.ModelInferRequest), so they join its private pool.
	sed -i 's/_descriptor_pool.Default().AddSerializedFile(/grpc__predict__v2__pb2.DESCRIPTOR.pool.AddSerializedFile(/' \
	  serving_image/proto/async_inference_pb2.py

lint: setup
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: setup
	$(BIN)/mypy

pytest: setup
	$(BIN)/pytest

test: lint typecheck $(TEST_TARGETS) pytest

demo: setup
	$(BIN)/servectl demo

bench: setup
	$(BIN)/python benchmarks/serving.py

clean:
	rm -rf $(STAMPS) $(VENV) $(TOOLS) $(MODELS_DIR)/*/
