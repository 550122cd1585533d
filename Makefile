# Every target runs as root on Debian 12. `make setup` is idempotent; the others call it first.
VENV := .venv
PY := $(VENV)/bin/python
export PATH := $(CURDIR)/$(VENV)/bin:$(PATH)
# the demo lab's IP families: `make demo IP_FAMILY=dual` draws the matrix over IPv4 and IPv6
IP_FAMILY ?= ipv4

.PHONY: setup test-setup demo test unit integration e2e lint bench proto image

setup:
	@bash scripts/setup.sh

demo: setup
	$(VENV)/bin/kubeweft lab demo --ip-family $(IP_FAMILY)

test-setup:
	@bash scripts/setup.sh --test

# unit and integration, then the e2e suite against a fresh lab
test: test-setup
	$(PY) -m pytest -q -p no:cacheprovider tests/unit tests/integration
	@$(MAKE) --no-print-directory e2e

unit: setup
	$(PY) -m pytest -q tests/unit

integration: setup
	$(PY) -m pytest -q tests/integration

# tests/e2e against a fresh lab of its own (removed also on failure), its JSON report printed at
# the end; `KUBECONFIG=FILE pytest tests/e2e` runs the same suite against any cluster
e2e: setup
	@bash tests/e2e/run-lab.sh

lint: setup
	$(VENV)/bin/ruff check .

bench: setup
	@for b in bench/*.py; do echo "== $$b"; $(PY) $$b || exit 1; done

proto: setup
	@# -I maps the folder to the import package's path, so the generated code imports kubeweft.proto
	rm -rf build/proto && mkdir -p build/proto
	$(PY) -m grpc_tools.protoc -Ikubeweft/proto=proto --python_out=build/proto --grpc_python_out=build/proto \
		kubeweft/proto/kubeweft.proto
	cp build/proto/kubeweft/proto/kubeweft_pb2*.py proto/

image: setup
	@# the agent image from Debian's packages, no Docker needed: out/image/kubeweft-<version>.tar
	$(PY) deploy/image/build.py
