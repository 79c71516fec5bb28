# recflow: `make demo` runs the pipeline on embedded defaults, `make test` runs the tests.
# Both create or update the virtual environment first (a no-op when nothing changed).

PYTHON ?= python3.11
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
UV     := $(shell command -v uv 2>/dev/null)

.PHONY: venv demo up shop airflow test test-all test-fast lint format lock doctor clean monitoring-deps browser-deps checkov screenshots k8s-tools

venv: $(STAMP)

# Re-install only when the lock or the package metadata changed.
$(STAMP): requirements.txt pyproject.toml
	@if [ -z "$(UV)" ]; then $(PYTHON) -m pip install --quiet --user uv || $(PYTHON) -m pip install --quiet uv; fi
	@UV=$$(command -v uv || echo "$(PYTHON) -m uv"); \
	  [ -x $(BIN)/python ] || $$UV venv --quiet --python $(PYTHON) $(VENV); \
	  $$UV pip install --quiet --python $(BIN)/python -r requirements.txt && \
	  $$UV pip install --quiet --python $(BIN)/python --no-deps -e .
	@touch $(STAMP)

# Library deprecation warnings would bury the demo's story; tests still show them.
demo: venv
	PYTHONWARNINGS=ignore $(BIN)/python -m jobs.demo

# After `make demo`: the champion's Bento on :3000 next to the CDN stand-in on :8765.
up: venv
	$(BIN)/recflow up

# The storefront page (jobs/shop) over the CDN stand-in; with `make up` running it also
# follows clicks through the service. Open http://127.0.0.1:8780/?user=u000001
shop: venv
	$(BIN)/recflow shop

# After `make demo`: Airflow's scheduler, API server and UI on the demo's data root, one
# daily ingest interval per generated day, every task its own process; prints URL and login.
airflow: venv
	$(BIN)/recflow airflow

# What CI runs: unit, integration (Spark, servers) and DAG runs, without the `long` tests
# (minutes each; see tests/README.md), so a clean machine finishes well inside CI's limit.
test: venv checkov browser-deps k8s-tools
	$(BIN)/pytest -m "not long"

# Everything, the `long` tests included (the week-long DAG chain, killed processes).
test-all: venv
	$(BIN)/pytest

# The fast tier: no Spark, no servers, no DAG runs (see tests/README.md).
test-fast: venv
	$(BIN)/pytest -m "not slow"

lint: venv
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: venv
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

# Recompile the lock after editing requirements.in (existing pins are kept).
lock:
	@UV=$$(command -v uv || echo "$(PYTHON) -m uv"); \
	  $$UV pip compile requirements.in --python-version 3.11 -o requirements.txt; \
	  $$UV pip compile infra/checkov/requirements.in --python-version 3.11 \
	    -o infra/checkov/requirements.txt

# checkov (infra/terraform's policy scan, tests/unit/test_terraform.py) in its own
# environment: its pins clash with the stack's. Re-installed only when its lock changes.
CHECKOV_VENV := .venv-checkov
checkov: $(CHECKOV_VENV)/.installed
$(CHECKOV_VENV)/.installed: infra/checkov/requirements.txt | $(STAMP)
	@UV=$$(command -v uv || echo "$(PYTHON) -m uv"); \
	  [ -x $(CHECKOV_VENV)/bin/python ] || $$UV venv --quiet --python $(PYTHON) $(CHECKOV_VENV); \
	  $$UV pip install --quiet --python $(CHECKOV_VENV)/bin/python -r infra/checkov/requirements.txt
	@touch $@

doctor: venv
	$(BIN)/recflow doctor

clean:
	rm -rf var .pytest_cache .ruff_cache

# Prometheus (with promtool) and the Pushgateway from Debian's packages; the project starts
# them itself (jobs/monitor/servers.py), never through systemd. sudo only when not root.
# Idempotent: nothing happens when the binaries are there (`.ci/run` always calls it).
# Debian's postinst would start both as services (Prometheus on 9090): a temporary
# policy-rc.d answering 101 ("not allowed") keeps invoke-rc.d from starting them, and on a
# host run by systemd they are then disabled too, so no boot starts them either.
MONITORING_BINARIES ?= promtool prometheus-pushgateway
POLICY_RC_D ?= /usr/sbin/policy-rc.d
SYSTEMD_RUN_DIR ?= /run/systemd/system
monitoring-deps:
	@missing=; for b in $(MONITORING_BINARIES); do command -v $$b >/dev/null || missing=1; done; \
	if [ -z "$$missing" ]; then echo "monitoring-deps: already installed"; exit 0; fi; \
	SUDO=$$([ "$$(id -u)" -eq 0 ] || echo sudo); \
	saved=; if [ -e "$(POLICY_RC_D)" ]; then saved=$$(mktemp) && $$SUDO cp -p "$(POLICY_RC_D)" "$$saved"; fi; \
	restore() { if [ -n "$$saved" ]; then $$SUDO mv "$$saved" "$(POLICY_RC_D)"; else $$SUDO rm -f "$(POLICY_RC_D)"; fi; }; \
	trap restore EXIT; \
	printf '#!/bin/sh\n# recflow monitoring-deps: start no service while installing\nexit 101\n' \
	  | $$SUDO tee "$(POLICY_RC_D)" >/dev/null && $$SUDO chmod 755 "$(POLICY_RC_D)" && \
	$$SUDO env DEBIAN_FRONTEND=noninteractive apt-get update -qq && \
	$$SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
	  prometheus prometheus-pushgateway || exit 1; \
	if [ -d "$(SYSTEMD_RUN_DIR)" ] && command -v systemctl >/dev/null; then \
	  $$SUDO systemctl disable --now prometheus prometheus-pushgateway; \
	fi

# After `make demo`: the README's pictures (docs/img) of the storefront, Airflow, MLflow and
# the Data Docs, taken in headless Chromium by jobs/screenshots.py.
screenshots: venv browser-deps
	$(BIN)/python -m jobs.screenshots

# Headless Chromium and its WebDriver from Debian's packages: the storefront's browser tests
# (tests/integration/test_shop_browser.py), its benchmark and `make screenshots` drive them
# through Selenium. Idempotent: nothing happens when both binaries are there.
BROWSER_BINARIES ?= chromium chromedriver
browser-deps:
	@missing=; for b in $(BROWSER_BINARIES); do command -v $$b >/dev/null || missing=1; done; \
	if [ -z "$$missing" ]; then echo "browser-deps: already installed"; exit 0; fi; \
	SUDO=$$([ "$$(id -u)" -eq 0 ] || echo sudo); \
	$$SUDO env DEBIAN_FRONTEND=noninteractive apt-get update -qq && \
	$$SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
	  chromium chromium-driver fonts-dejavu-core

# kubeconform and kustomize (tests/unit/test_k8s.py) built from the Go module proxy into
# .cache/bin (~40 s once); the schemas kubeconform checks against come from the
# kubernetes-validate wheel in the lock. kustomize 5.8 needs Go 1.27: 5.7.1 builds with 1.26.
KUBECONFORM_VERSION ?= v0.8.0
KUSTOMIZE_VERSION ?= v5.7.1
k8s-tools: .cache/bin/kubeconform .cache/bin/kustomize
.cache/bin/kubeconform:
	@command -v go >/dev/null || { echo "k8s-tools: Go is needed (https://go.dev/dl)"; exit 1; }
	GOBIN=$(CURDIR)/.cache/bin GOFLAGS=-mod=mod go install \
	  github.com/yannh/kubeconform/cmd/kubeconform@$(KUBECONFORM_VERSION)
.cache/bin/kustomize:
	@command -v go >/dev/null || { echo "k8s-tools: Go is needed (https://go.dev/dl)"; exit 1; }
	GOBIN=$(CURDIR)/.cache/bin GOFLAGS=-mod=mod go install \
	  sigs.k8s.io/kustomize/kustomize/v5@$(KUSTOMIZE_VERSION)
