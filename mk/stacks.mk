# Stacks (issue 3): CRD schemas of the Istio, prometheus-operator and cert-manager kinds the stacks create, read
# from those projects' Go modules at pinned versions and checked against pinned module sums. Never hand-written,
# never fetched by a test. promtool (Debian's prometheus package) checks the alert and recording rules and the
# dashboards' queries; amtool (prometheus-alertmanager) checks the Alertmanager configuration, and the same
# package's alertmanager routes real alerts to `servectl retrain-receiver` in tests/servectl/retrain_receiver.
# The AWS Load Balancer Controller's TargetGroupBinding has no schema here: its v2 releases are not a valid
# version of its Go module path (no /v2 suffix), so the module proxy serves only v1.1.9, older than the CRD.
APT_PACKAGES += prometheus prometheus-alertmanager

ISTIO_API_VERSION := v1.30.8
ISTIO_API_SUM := h1:/weRNO9YbJsKqFibiGCjXG1i+UwNhJb3vts6ChGR554=
PROMETHEUS_OPERATOR_VERSION := v0.85.0
PROMETHEUS_OPERATOR_SUM := h1:M5xLCLEoaW2IJfnuCwFzzpL+jSVQu3KGT84Pye+fW8s=
# The cert-manager chart's version (stacks/artifacts.lock.json).
CERT_MANAGER_VERSION := v1.18.2
CERT_MANAGER_SUM := h1:H2P75ycGcTMauV3gvpkDqLdS3RSXonWF2S49QGA1PZE=
CERT_MANAGER_CRDS := certificates issuers clusterissuers
CRD_GOMODCACHE := $(abspath $(TOOLS))/gomod
CRD_DIR := $(TOOLS)/crds
PROMETHEUS_CRDS := servicemonitors prometheusrules podmonitors
# The KEDA and External Secrets charts' versions (stacks/artifacts.lock.json): the async workers' scaler,
# its trigger authentication, and the queue's AUTH token synced from Secrets Manager (issue 16).
KEDA_VERSION := v2.17.2
KEDA_SUM := h1:xlrcK5TKABJF9PebK79sgL07s/csGjL3H4m72OkZXxk=
KEDA_CRDS := scaledobjects triggerauthentications
EXTERNAL_SECRETS_VERSION := v0.19.2
EXTERNAL_SECRETS_SUM := h1:bdOpEt9Pww2e8QGh4apX7M0nehwNOVAQJLd8z6hAXWI=
EXTERNAL_SECRETS_CRDS := externalsecrets clustersecretstores

SETUP_TARGETS += $(STAMPS)/crds

$(STAMPS)/crds: mk/stacks.mk | $(STAMPS)
	@command -v go >/dev/null || { echo "stacks: the Go toolchain is needed to fetch the pinned CRD schemas"; exit 1; }
	rm -rf $(CRD_DIR).tmp && mkdir -p $(CRD_DIR).tmp
	GOMODCACHE=$(CRD_GOMODCACHE) GOFLAGS=-modcacherw GOTOOLCHAIN=local \
	  go mod download -json istio.io/api@$(ISTIO_API_VERSION) \
	  github.com/prometheus-operator/prometheus-operator@$(PROMETHEUS_OPERATOR_VERSION) \
	  github.com/cert-manager/cert-manager@$(CERT_MANAGER_VERSION) \
	  github.com/kedacore/keda/v2@$(KEDA_VERSION) \
	  github.com/external-secrets/external-secrets@$(EXTERNAL_SECRETS_VERSION) > $(CRD_DIR).tmp/modules.json
	grep -qF '"Sum": "$(ISTIO_API_SUM)"' $(CRD_DIR).tmp/modules.json
	grep -qF '"Sum": "$(PROMETHEUS_OPERATOR_SUM)"' $(CRD_DIR).tmp/modules.json
	grep -qF '"Sum": "$(CERT_MANAGER_SUM)"' $(CRD_DIR).tmp/modules.json
	grep -qF '"Sum": "$(KEDA_SUM)"' $(CRD_DIR).tmp/modules.json
	grep -qF '"Sum": "$(EXTERNAL_SECRETS_SUM)"' $(CRD_DIR).tmp/modules.json
	cp $(CRD_GOMODCACHE)/istio.io/api@$(ISTIO_API_VERSION)/kubernetes/customresourcedefinitions.gen.yaml \
	  $(CRD_DIR).tmp/istio-$(ISTIO_API_VERSION).yaml
	for kind in $(PROMETHEUS_CRDS); do \
	  cp $(CRD_GOMODCACHE)/github.com/prometheus-operator/prometheus-operator@$(PROMETHEUS_OPERATOR_VERSION)/example/prometheus-operator-crd/monitoring.coreos.com_$$kind.yaml \
	    $(CRD_DIR).tmp/prometheus-operator-$(PROMETHEUS_OPERATOR_VERSION)-$$kind.yaml; \
	done
	# The chart's CRD templates: Helm directives sit only in comments and quoted labels, so they parse as YAML.
	for kind in $(CERT_MANAGER_CRDS); do \
	  cp $(CRD_GOMODCACHE)/github.com/cert-manager/cert-manager@$(CERT_MANAGER_VERSION)/deploy/crds/crd-$$kind.yaml \
	    $(CRD_DIR).tmp/cert-manager-$(CERT_MANAGER_VERSION)-$$kind.yaml; \
	done
	for kind in $(KEDA_CRDS); do \
	  cp $(CRD_GOMODCACHE)/github.com/kedacore/keda/v2@$(KEDA_VERSION)/config/crd/bases/keda.sh_$$kind.yaml \
	    $(CRD_DIR).tmp/keda-$(KEDA_VERSION)-$$kind.yaml; \
	done
	for kind in $(EXTERNAL_SECRETS_CRDS); do \
	  cp $(CRD_GOMODCACHE)/github.com/external-secrets/external-secrets@$(EXTERNAL_SECRETS_VERSION)/config/crds/bases/external-secrets.io_$$kind.yaml \
	    $(CRD_DIR).tmp/external-secrets-$(EXTERNAL_SECRETS_VERSION)-$$kind.yaml; \
	done
	rm -rf $(CRD_DIR) && mv $(CRD_DIR).tmp $(CRD_DIR)
	touch $@

.PHONY: plan-stacks
plan-stacks: setup
	$(BIN)/servectl plan --all
