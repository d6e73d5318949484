# A real Kubernetes control plane (issue 14 point 8, issue 10 point 2): kube-apiserver and
# kube-controller-manager built from the k8s.io/kubernetes Go module into .tools/bin by `make setup`, etcd
# from Debian, and the Istio CRDs from the istio.io/api module. `servectl cluster up` (servectl/cluster/)
# starts them on loopback, and tests/kube_api.py through the same code. The controller-manager finalizes
# deleted namespaces and runs the garbage collector: without it namespace deletion and foreground deletes
# hang (so `pulumi destroy` would).
# Build times measured here (2 cores, shared with other builds):
# - kube-apiserver: cold Go caches 25.5 min wall, 13.3 min CPU (load about 9; idle, about 7 min is
#   expected, not measured); warm Go caches (after `rm -rf .tools`) 60 s.
# - kube-controller-manager, built after kube-apiserver (their shared packages already in the Go cache):
#   8.1 min wall, 2.1 min CPU (487 s; user 99 s, sys 24 s) at load 12 to 15; warm Go caches (its own
#   build cached, the binary and marker deleted) 25 s wall at load 12.
# - both after an edit to this file (every package cached): 16 s wall at load 10.
# - up to date: nothing is rebuilt (0.01 s).
# The certificates and keys are made with the `cryptography` package (servectl/cluster/pki.py), not openssl.
APT_PACKAGES += etcd-server

KUBE_VERSION := v1.34.4
# The staging modules (k8s.io/api, apiserver, ...) are released as v0.<minor>.<patch> of the same tree.
KUBE_STAGING_VERSION := v0.34.4
KUBE_SUM := h1:Yy6R4QB8C9kJPp25GFqEvX5XQwY5qzKeqD0Xx6oAcmk=
KUBE_APISERVER := $(TOOLS)/bin/kube-apiserver
KUBE_CONTROLLER_MANAGER := $(TOOLS)/bin/kube-controller-manager
KUBE_BUILD := $(TOOLS)/kube-build
KUBE_VERSION_PKG := k8s.io/component-base/version
# What `kube-apiserver --version` prints and what the server's emulated version is derived from: an
# unstamped binary says v0.0.0-master and refuses the v1.34 feature gates.
KUBE_LDFLAGS := -s -w -X $(KUBE_VERSION_PKG).gitVersion=$(KUBE_VERSION) -X $(KUBE_VERSION_PKG).gitMajor=1 \
  -X $(KUBE_VERSION_PKG).gitMinor=34 -X $(KUBE_VERSION_PKG).gitTreeState=clean \
  -X $(KUBE_VERSION_PKG).buildDate=2026-02-10T12:53:36Z

ISTIO_CRD_API_VERSION := v1.32.0
ISTIO_CRD_API_SUM := h1:37mJvg9I0biYZAEQF+MATs4FNeCpXEIVO3LFpVb6iNM=
KUBE_GOMODCACHE := $(abspath $(TOOLS))/gomod
ISTIO_CRDS := $(TOOLS)/kube-crds/istio-$(ISTIO_CRD_API_VERSION).yaml

SETUP_TARGETS += $(KUBE_APISERVER) $(KUBE_CONTROLLER_MANAGER) $(ISTIO_CRDS)

.PHONY: kube-apiserver kube-controller-manager

kube-apiserver: $(KUBE_APISERVER) $(ISTIO_CRDS)

kube-controller-manager: $(KUBE_CONTROLLER_MANAGER)

# A marker per pinned version and binary: changing the version rebuilds, deleting .tools too.
$(TOOLS)/versions/kube-%-$(KUBE_VERSION):
	mkdir -p $(@D) $(TOOLS)/bin
	touch $@

# k8s.io/kubernetes's own go.mod points its staging modules at ./staging, which a module download does
# not carry: a scratch module requires it and replaces every staging module (the list read from that
# go.mod) with its published version. The Go caches make a rebuild a link step. $(call kube_build,CMD)
# builds k8s.io/kubernetes/cmd/CMD into $@, each binary in its own scratch directory so `make -j` can
# run both builds side by side.
define kube_build
	@command -v go >/dev/null || { echo "kubeapi: the Go toolchain is needed to build $(1)"; exit 1; }
	rm -rf $(KUBE_BUILD)-$(1) && mkdir -p $(KUBE_BUILD)-$(1)
	cd $(KUBE_BUILD)-$(1) && GOTOOLCHAIN=local go mod download -json k8s.io/kubernetes@$(KUBE_VERSION) > module.json \
	  && grep -qF '"Sum": "$(KUBE_SUM)"' module.json \
	  && gomod=$$(sed -n 's/^[[:space:]]*"GoMod": "\(.*\)",$$/\1/p' module.json) \
	  && { printf 'module kube-build\n\ngo 1.24.0\n\nrequire k8s.io/kubernetes $(KUBE_VERSION)\n\nreplace (\n'; \
	       sed -n 's#^[[:space:]]*\(k8s.io/[a-z0-9-]*\) => ./staging/.*#\t\1 => \1 $(KUBE_STAGING_VERSION)#p' "$$gomod"; \
	       printf ')\n'; } > go.mod \
	  && GOTOOLCHAIN=local go get k8s.io/kubernetes/cmd/$(1)@$(KUBE_VERSION) \
	  && GOTOOLCHAIN=local GOFLAGS=-buildvcs=false go build -trimpath -ldflags "$(KUBE_LDFLAGS)" \
	    -o $(abspath $@) k8s.io/kubernetes/cmd/$(1)
	rm -rf $(KUBE_BUILD)-$(1)
	$@ --version | grep -qx 'Kubernetes $(KUBE_VERSION)'
	touch $@
endef

$(KUBE_APISERVER): $(TOOLS)/versions/kube-apiserver-$(KUBE_VERSION) mk/kubeapi.mk
	$(call kube_build,kube-apiserver)

$(KUBE_CONTROLLER_MANAGER): $(TOOLS)/versions/kube-controller-manager-$(KUBE_VERSION) mk/kubeapi.mk
	$(call kube_build,kube-controller-manager)

# The Istio CRDs the API server serves VirtualServices with, checked against the module's pinned sum.
$(ISTIO_CRDS): mk/kubeapi.mk
	@command -v go >/dev/null || { echo "kubeapi: the Go toolchain is needed to fetch the Istio CRDs"; exit 1; }
	mkdir -p $(@D)
	GOMODCACHE=$(KUBE_GOMODCACHE) GOFLAGS=-modcacherw GOTOOLCHAIN=local \
	  go mod download -json istio.io/api@$(ISTIO_CRD_API_VERSION) > $@.json
	grep -qF '"Sum": "$(ISTIO_CRD_API_SUM)"' $@.json
	cp $(KUBE_GOMODCACHE)/istio.io/api@$(ISTIO_CRD_API_VERSION)/kubernetes/customresourcedefinitions.gen.yaml $@.tmp
	rm $@.json && mv $@.tmp $@
