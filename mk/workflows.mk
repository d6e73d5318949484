# CI/CD workflows (issue 9): actionlint at a pinned version, built from its Go module into .tools/bin by
# `make setup` (never fetched at run time), and shellcheck (Debian) so actionlint checks every `run:`
# script too. `make test` lints .github/workflows; the deploy jobs set themselves up with `deploy-setup`.
ACTIONLINT_VERSION := v1.7.12
ACTIONLINT := $(TOOLS)/bin/actionlint
WORKFLOWS := .github/workflows

APT_PACKAGES += shellcheck
SETUP_TARGETS += $(ACTIONLINT)
TEST_TARGETS += workflows-lint

.PHONY: workflows-lint deploy-setup

# A marker per pinned version: changing the version rebuilds the tool, deleting .tools too.
$(TOOLS)/versions/actionlint-$(ACTIONLINT_VERSION):
	mkdir -p $(@D) $(TOOLS)/bin
	touch $@

$(ACTIONLINT): $(TOOLS)/versions/actionlint-$(ACTIONLINT_VERSION)
	GOBIN=$(abspath $(TOOLS)/bin) GOFLAGS=-buildvcs=false \
	  go install github.com/rhysd/actionlint/cmd/actionlint@$(ACTIONLINT_VERSION)
	touch $@

# actionlint skips shellcheck silently when it is missing; here a missing shellcheck is an error. The scripts the
# workflows share (.github/scripts/*.sh) are checked by shellcheck directly.
workflows-lint: $(ACTIONLINT) $(STAMPS)/apt
	@command -v shellcheck >/dev/null || { echo "workflows-lint: shellcheck is missing (make setup installs it)"; exit 1; }
	$(ACTIONLINT) -shellcheck "$$(command -v shellcheck)" $(WORKFLOWS)/*.yml
	shellcheck .github/scripts/*.sh

# What a deploy job needs and nothing more: the virtualenv (Pulumi programs, servectl) and the pinned OPA the
# policy gate runs. Not `setup`: no models, Debian packages or CRD schemas on a deploy runner.
deploy-setup: $(STAMPS)/venv $(TOOLS)/bin/opa
