# Artifact mirror: crane (go-containerregistry) at a pinned version, built from its Go module into
# .tools/bin by `make setup`. `servectl mirror` copies images with it and pushes charts as OCI artifacts;
# its tests run `crane registry serve` on loopback as both the upstream and the in-region registry.
CRANE_VERSION := v0.22.1
CRANE := $(TOOLS)/bin/crane

SETUP_TARGETS += $(CRANE)

# A marker per pinned version: changing the version rebuilds crane, deleting .tools too.
$(TOOLS)/versions/crane-$(CRANE_VERSION):
	mkdir -p $(@D) $(TOOLS)/bin
	touch $@

$(CRANE): $(TOOLS)/versions/crane-$(CRANE_VERSION)
	GOBIN=$(abspath $(TOOLS)/bin) GOFLAGS=-buildvcs=false \
	  go install github.com/google/go-containerregistry/cmd/crane@$(CRANE_VERSION)
	touch $@
