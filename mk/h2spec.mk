# HTTP/2 conformance: h2spec at a pinned version, built from its Go module into .tools/bin by
# `make setup` (never fetched at run time). tests/serving_image/test_http2_conformance.py runs it
# against the server's gRPC port. Unlike ghz, a failed build stops the build: the tests need it.
H2SPEC_RELEASE := 2.2.1
H2SPEC_VERSION := v$(H2SPEC_RELEASE)+incompatible
H2SPEC := $(TOOLS)/bin/h2spec
# h2spec predates Go modules (hence +incompatible), so a plain `go install h2spec@VERSION` takes
# whatever versions of its imports are newest that day. They are pinned here instead; x/net is the
# one that matters, as h2spec reads and writes every frame with x/net's http2 framer and HPACK.
H2SPEC_DEPS := golang.org/x/net@v0.62.0 github.com/spf13/cobra@v1.10.2 github.com/fatih/color@v1.19.0
H2SPEC_BUILD := $(TOOLS)/h2spec-build

SETUP_TARGETS += $(H2SPEC)

# A marker per pinned version: changing the version rebuilds h2spec, deleting .tools too.
$(TOOLS)/versions/h2spec-$(H2SPEC_VERSION):
	mkdir -p $(@D) $(TOOLS)/bin
	touch $@

# Built in a scratch module that requires h2spec and the pinned imports; this fragment is a
# prerequisite so that changing H2SPEC_DEPS rebuilds too. -X sets what `h2spec --version` prints.
$(H2SPEC): $(TOOLS)/versions/h2spec-$(H2SPEC_VERSION) mk/h2spec.mk
	rm -rf $(H2SPEC_BUILD) && mkdir -p $(H2SPEC_BUILD)
	cd $(H2SPEC_BUILD) && go mod init h2spec-build 2>/dev/null \
	  && go get github.com/summerwind/h2spec@$(H2SPEC_VERSION) $(H2SPEC_DEPS) \
	  && GOFLAGS=-buildvcs=false go build -trimpath \
	    -ldflags "-X main.VERSION=$(H2SPEC_RELEASE)" \
	    -o $(abspath $@) github.com/summerwind/h2spec/cmd/h2spec
	rm -rf $(H2SPEC_BUILD)
	touch $@
