# The real Pulumi engine and its Kubernetes provider (issue 10 point 1), built pinned from their Go modules
# into .tools/bin by `make setup`, never fetched at run time. servectl/engine.py gives every real-engine run
# this PATH and PULUMI_HOME with automatic plugin acquisition and the update check off.
# The engine finds the provider in PULUMI_HOME's plugin directory at its exact version; a
# pulumi-resource-kubernetes on PATH would take precedence over it whatever its version (an "ambient" plugin,
# pulumi's sdk/go/common/workspace/plugins.go), so servectl/engine.py sets PULUMI_IGNORE_AMBIENT_PLUGINS.
# Build times measured here (2 cores, the machine shared with other builds and tests, load 10 to 17 during
# the cold builds, which also ran side by side): cold (no pulumi package in the Go build cache; shared
# dependencies such as client-go may have been there from other builds) the CLI 26.5 min wall, 8.2 min CPU,
# 1.9 GB peak RSS; the provider 39 min wall, 17.8 min CPU, 4.6 GB peak RSS (idle, about 5 and 12 min are
# expected from the CPU times, not measured). Warm Go caches (binaries and markers removed): the
# CLI 21 s, the provider 20 s (generate and link), the plugin install 1.4 s; up to date, nothing is rebuilt.
PULUMI_VERSION := v3.274.1
PULUMI_PKG_SUM := h1:XYyUwBMf1bCA0bnvL4MfgX96qr38ezcNnXXbXavw9Fo=
PULUMI_SDK_SUM := h1:Sy2OifRLCPVmFMDTkp18yRk/YviwhJuGZU6vfLwruPM=
PULUMI := $(TOOLS)/bin/pulumi
PULUMI_BUILD := $(TOOLS)/pulumi-build
# Without it `pulumi version` prints nothing and the engine reports itself as a development build.
PULUMI_LDFLAGS := -s -w -X github.com/pulumi/pulumi/sdk/v3/go/common/version.Version=$(PULUMI_VERSION)

# Release 4.25.0 of pulumi-kubernetes: the proxy serves its provider module only under this pseudo-version
# (the tagged provider/v4.25.0 does not download whole). The Python SDK is pinned to the same release in
# constraints.txt, so the SDK asks the engine for exactly this plugin version.
PULUMI_K8S_RELEASE := 4.25.0
PULUMI_K8S_MODULE := github.com/pulumi/pulumi-kubernetes/provider/v4
PULUMI_K8S_MODVERSION := v4.0.0-20260115033456-f47bc2d6f199
PULUMI_K8S_SUM := h1:j2bphCf7c2YhnBrhwht2f3TNRRgcMImltUlAgzxr9H4=
PULUMI_K8S := $(TOOLS)/bin/pulumi-resource-kubernetes
PULUMI_K8S_BUILD := $(TOOLS)/pulumi-k8s-build
PULUMI_K8S_LDFLAGS := -s -w -X $(PULUMI_K8S_MODULE)/pkg/version.Version=$(PULUMI_K8S_RELEASE)
# The engine's plugin directory: the provider is installed there at its exact version, so a program that
# asks for kubernetes v4.25.0 finds it without a download.
PULUMI_HOME_DIR := $(TOOLS)/pulumi-home
PULUMI_K8S_PLUGIN := $(PULUMI_HOME_DIR)/plugins/resource-kubernetes-v$(PULUMI_K8S_RELEASE)/pulumi-resource-kubernetes

SETUP_TARGETS += $(PULUMI) $(PULUMI_K8S_PLUGIN)

.PHONY: pulumi-engine

pulumi-engine: $(PULUMI) $(PULUMI_K8S_PLUGIN)

# A marker per pinned version: changing a version rebuilds, deleting .tools too.
$(TOOLS)/versions/pulumi-$(PULUMI_VERSION) $(TOOLS)/versions/pulumi-kubernetes-$(PULUMI_K8S_RELEASE):
	mkdir -p $(@D) $(TOOLS)/bin
	touch $@

# A scratch module requires pkg and sdk at the pinned version (pkg's go.mod points sdk at ../sdk, which a
# module download does not carry) and copies pkg's one other replace, the clipboard fork its cmd imports.
$(PULUMI): $(TOOLS)/versions/pulumi-$(PULUMI_VERSION) mk/pulumi.mk
	@command -v go >/dev/null || { echo "pulumi: the Go toolchain is needed to build the Pulumi CLI"; exit 1; }
	rm -rf $(PULUMI_BUILD) && mkdir -p $(PULUMI_BUILD)
	cd $(PULUMI_BUILD) && GOTOOLCHAIN=local go mod download -json github.com/pulumi/pulumi/pkg/v3@$(PULUMI_VERSION) \
	    github.com/pulumi/pulumi/sdk/v3@$(PULUMI_VERSION) > module.json \
	  && grep -qF '"Sum": "$(PULUMI_PKG_SUM)"' module.json && grep -qF '"Sum": "$(PULUMI_SDK_SUM)"' module.json \
	  && gomod=$$(sed -n 's#^[[:space:]]*"GoMod": "\(.*/pulumi/pkg/v3/@v/.*\)",$$#\1#p' module.json) \
	  && { printf 'module pulumi-build\n\ngo 1.26.6\n\nrequire (\n'; \
	       printf '\tgithub.com/pulumi/pulumi/pkg/v3 $(PULUMI_VERSION)\n\tgithub.com/pulumi/pulumi/sdk/v3 $(PULUMI_VERSION)\n)\n\n'; \
	       grep '^replace github.com/atotto/clipboard =>' "$$gomod"; } > go.mod \
	  && grep -q '^replace github.com/atotto/clipboard' go.mod \
	  && GOTOOLCHAIN=local go get github.com/pulumi/pulumi/pkg/v3/cmd/pulumi@$(PULUMI_VERSION) \
	  && GOTOOLCHAIN=local GOFLAGS=-buildvcs=false go build -trimpath -ldflags "$(PULUMI_LDFLAGS)" \
	    -o $(abspath $@) github.com/pulumi/pulumi/pkg/v3/cmd/pulumi
	rm -rf $(PULUMI_BUILD)
	PULUMI_HOME=$(abspath $(PULUMI_HOME_DIR)) PULUMI_SKIP_UPDATE_CHECK=true $@ version | grep -qx '$(PULUMI_VERSION)'
	touch $@

# The provider's main package embeds files its generate.go writes (the schema stamped with the version),
# so it cannot be built from the module cache: it is copied into a scratch module that requires the
# provider module, generated there with VERSION set, and built with the same version stamped. -mod=mod only
# records the sums of what the build imports; every version comes from the provider's own requirements.
$(PULUMI_K8S): $(TOOLS)/versions/pulumi-kubernetes-$(PULUMI_K8S_RELEASE) mk/pulumi.mk
	@command -v go >/dev/null || { echo "pulumi: the Go toolchain is needed to build the Kubernetes provider"; exit 1; }
	rm -rf $(PULUMI_K8S_BUILD) && mkdir -p $(PULUMI_K8S_BUILD)
	cd $(PULUMI_K8S_BUILD) && GOTOOLCHAIN=local go mod download -json $(PULUMI_K8S_MODULE)@$(PULUMI_K8S_MODVERSION) \
	    > module.json \
	  && grep -qF '"Sum": "$(PULUMI_K8S_SUM)"' module.json \
	  && dir=$$(sed -n 's/^[[:space:]]*"Dir": "\(.*\)",$$/\1/p' module.json) \
	  && printf 'module pulumi-k8s-build\n\ngo 1.24.7\n\nrequire $(PULUMI_K8S_MODULE) $(PULUMI_K8S_MODVERSION)\n' > go.mod \
	  && cp "$$dir"/cmd/pulumi-resource-kubernetes/*.go "$$dir"/cmd/pulumi-resource-kubernetes/*.json . \
	  && chmod u+w * \
	  && VERSION=$(PULUMI_K8S_RELEASE) GOTOOLCHAIN=local GOFLAGS=-mod=mod go run generate.go \
	  && GOTOOLCHAIN=local GOFLAGS='-mod=mod -buildvcs=false' go build -trimpath -ldflags "$(PULUMI_K8S_LDFLAGS)" \
	    -o $(abspath $@) .
	rm -rf $(PULUMI_K8S_BUILD)
	touch $@

# `plugin install --file` copies the binary into PULUMI_HOME's plugin directory under its exact version,
# where the engine looks when a program asks for kubernetes v4.25.0 and acquisition is disabled.
$(PULUMI_K8S_PLUGIN): $(PULUMI) $(PULUMI_K8S)
	rm -rf $(PULUMI_HOME_DIR)/plugins/resource-kubernetes-v$(PULUMI_K8S_RELEASE)*
	PULUMI_HOME=$(abspath $(PULUMI_HOME_DIR)) PULUMI_SKIP_UPDATE_CHECK=true \
	  $(PULUMI) plugin install resource kubernetes v$(PULUMI_K8S_RELEASE) --file $(PULUMI_K8S)
	test -x $@
	touch $@
