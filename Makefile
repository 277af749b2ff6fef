# mlgitops — `make demo` and `make test` work on a fresh machine with Python >= 3.11 and git.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
export DO_NOT_TRACK := true
export MLFLOW_DISABLE_TELEMETRY := true

.PHONY: demo test test-fast lint typecheck bench clean install browser notebook

install: $(STAMP)

$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit("mlgitops needs Python >= 3.11, found " + sys.version.split()[0]) if sys.version_info < (3, 11) else None'
	@command -v git >/dev/null || { echo "mlgitops needs git on PATH"; exit 1; }
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip setuptools wheel
	PYTHONWARNINGS="ignore:Editable installation" $(BIN)/python -m pip install -q -e '.[dev]'
	@touch $(STAMP)

demo: $(STAMP)
	$(BIN)/mlgitops demo

# The walkthrough notebook in JupyterLab (the `notebook` extra, installed on first use).
notebook: $(STAMP)
	@test -x $(BIN)/jupyter-lab || PYTHONWARNINGS="ignore:Editable installation" $(BIN)/python -m pip install -q -e '.[dev,notebook]'
	$(BIN)/jupyter lab notebooks/

lint: $(STAMP)
	$(BIN)/ruff check mlgitops tests bench
	$(BIN)/lint-imports

typecheck: $(STAMP)
	$(BIN)/mypy

test: $(STAMP) browser realnode-deps lint typecheck
	$(BIN)/python -m pytest

# The fast lane alone (in-process tests; tests/support/lanes.py): about a minute, no browser,
# no cluster, no lint. One process: pytest-xdist costs more than it saves on 2 cores.
test-fast: $(STAMP)
	$(BIN)/python -m pytest -m fast -q

bench: $(STAMP)
	$(BIN)/python bench/commit_to_serving.py
	$(BIN)/python bench/serving.py
	$(BIN)/python bench/protocols.py
	$(BIN)/python bench/drift.py
	$(BIN)/python bench/drift_false_alarms.py
	$(BIN)/python bench/recording.py
	$(BIN)/python bench/stats_update.py
	$(BIN)/python bench/publish.py
	$(BIN)/python bench/rollback.py
	$(BIN)/python bench/kill9.py --trials 20
	$(BIN)/python bench/fleet.py
	$(BIN)/python bench/reports.py
	$(BIN)/python bench/rollout.py
	$(BIN)/python bench/prediction_log.py
	$(BIN)/python bench/prediction_export.py
	$(BIN)/python bench/gate.py

# Headless Chromium for the browser tests: Debian's package (no browser downloads needed).
APT_CHROMIUM := apt-get install -y -q chromium || { apt-get update -q && apt-get install -y -q chromium; }
browser:
	@command -v chromium >/dev/null || { \
	  if [ "$$(id -u)" = 0 ]; then sh -c '$(APT_CHROMIUM)'; \
	  elif sudo -n true 2>/dev/null; then sudo sh -c '$(APT_CHROMIUM)'; \
	  else echo "the browser tests need Chromium: sudo apt-get install -y chromium"; exit 1; fi; }

# The real-node lane (tests/k8s/realnode): containerd, runc, the CNI plugins, umoci and debootstrap,
# Debian's packages (pigz: containerd unpacks the image's layers with unpigz when it is there);
# installed when missing and root (elsewhere the lane skips).
REALNODE_PKGS := containerd runc containernetworking-plugins umoci debootstrap iptables pigz
APT_REALNODE := apt-get install -y -q --no-install-recommends $(REALNODE_PKGS) || { apt-get update -q && apt-get install -y -q --no-install-recommends $(REALNODE_PKGS); }
.PHONY: realnode-deps
realnode-deps:
	@for t in containerd runc umoci debootstrap iptables unpigz; do command -v $$t >/dev/null || missing=1; done; \
	  test -x /usr/lib/cni/bridge || missing=1; \
	  if [ -n "$$missing" ]; then \
	    if [ "$$(id -u)" = 0 ]; then DEBIAN_FRONTEND=noninteractive sh -c '$(APT_REALNODE)'; \
	    else echo "the real-node lane needs (as root): apt-get install -y $(REALNODE_PKGS)"; fi; fi

clean:
	rm -rf $(VENV) .mypy_cache .pytest_cache .ruff_cache

# Kubernetes test cluster (tests/k8s): etcd + kube-apiserver + kube-controller-manager built from
# the Go module proxy into ~/.cache/mlgitops/k8s (override: MLGITOPS_K8S_CACHE); needs Go. The
# first build takes about 10 minutes on 2 cores; afterwards k8s-bins is a no-op.
.PHONY: k8s-bins test-k8s image

# The mlgitops OCI image without a container engine (debootstrap + venv + umoci; needs root):
# cached in ~/.cache/mlgitops/image by a key of its inputs, so a second `make image` is a no-op.
image: $(STAMP)
	$(BIN)/python -m mlgitops.devcluster.image

k8s-bins:
	tools/k8s/build.sh

test-k8s: $(STAMP) k8s-bins
	$(BIN)/python -m pytest tests/k8s -m k8s
