# The CRDs the pinned charts register, from the charts' own source modules, for `servectl deploy --no-nodes`
# (servectl/deploy/no_nodes.py): a cluster without nodes runs no chart workload, so each Helm release is
# installed as a chart holding only its CRDs, and the stack's custom resources (PrometheusRules, Certificates,
# ...) are validated against the real schemas. The Istio CRDs come from mk/kubeapi.mk.
# kube-prometheus-stack 77.0.0 ships prometheus-operator v0.85.0 (artifacts.lock.json's image tag);
# cert-manager's chart v1.18.2 is the module's own tag. Checked against the modules' pinned sums.
PROMETHEUS_OPERATOR_VERSION := v0.85.0
PROMETHEUS_OPERATOR_SUM := h1:M5xLCLEoaW2IJfnuCwFzzpL+jSVQu3KGT84Pye+fW8s=
CERT_MANAGER_VERSION := v1.18.2
CERT_MANAGER_SUM := h1:H2P75ycGcTMauV3gvpkDqLdS3RSXonWF2S49QGA1PZE=
CHART_CRDS := $(TOOLS)/chart-crds
CHART_CRDS_GOMODCACHE := $(abspath $(TOOLS))/gomod
CHART_CRDS_STAMP := $(CHART_CRDS)/.prometheus-operator-$(PROMETHEUS_OPERATOR_VERSION).cert-manager-$(CERT_MANAGER_VERSION)

SETUP_TARGETS += $(CHART_CRDS_STAMP)

# go mod download prints the module's directory and sum; the sum must be the pinned one.
define fetch_module
GOMODCACHE=$(CHART_CRDS_GOMODCACHE) GOFLAGS=-modcacherw GOTOOLCHAIN=local go mod download -json $(1)@$(2) > $(CHART_CRDS)/module.json
grep -qF '"Sum": "$(3)"' $(CHART_CRDS)/module.json
endef

$(CHART_CRDS_STAMP): mk/chartcrds.mk
	@command -v go >/dev/null || { echo "chartcrds: the Go toolchain is needed to fetch the charts' CRDs"; exit 1; }
	rm -rf $(CHART_CRDS) && mkdir -p $(CHART_CRDS)/kube-prometheus-stack $(CHART_CRDS)/cert-manager
	$(call fetch_module,github.com/prometheus-operator/prometheus-operator,$(PROMETHEUS_OPERATOR_VERSION),$(PROMETHEUS_OPERATOR_SUM))
	cp $(CHART_CRDS_GOMODCACHE)/github.com/prometheus-operator/prometheus-operator@$(PROMETHEUS_OPERATOR_VERSION)/example/prometheus-operator-crd/*.yaml \
	  $(CHART_CRDS)/kube-prometheus-stack/
	$(call fetch_module,github.com/cert-manager/cert-manager,$(CERT_MANAGER_VERSION),$(CERT_MANAGER_SUM))
	# cert-manager's CRDs are chart templates (labels from the chart's helpers, gated on crds.enabled).
	cp $(CHART_CRDS_GOMODCACHE)/github.com/cert-manager/cert-manager@$(CERT_MANAGER_VERSION)/deploy/crds/crd-*.yaml \
	  $(CHART_CRDS_GOMODCACHE)/github.com/cert-manager/cert-manager@$(CERT_MANAGER_VERSION)/deploy/charts/cert-manager/templates/_helpers.tpl \
	  $(CHART_CRDS_GOMODCACHE)/github.com/cert-manager/cert-manager@$(CERT_MANAGER_VERSION)/deploy/charts/cert-manager/values.yaml \
	  $(CHART_CRDS)/cert-manager/
	rm $(CHART_CRDS)/module.json
	touch $@
