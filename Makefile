# The two commands of the README: `make run` and `make test`. Both set up .venv/ first (`make venv`).
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
# CPU installs use the fully pinned lock with --no-deps (see README); set LOCK= to skip it on CUDA machines.
LOCK ?= requirements/lock-cpu.txt
STAMP := $(VENV)/.installed
export OMP_WAIT_POLICY ?= PASSIVE
export HF_HUB_OFFLINE := 1

.PHONY: venv run test lint proto clean

venv: $(STAMP)

$(STAMP): $(LOCK) pyproject.toml clients/python/pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
ifneq ($(LOCK),)
	$(BIN)/pip install --no-deps -r $(LOCK)
	$(BIN)/pip install --no-deps --no-build-isolation -e clients/python -e .
else
	$(BIN)/pip install -e clients/python -e '.[dev]'
endif
	touch $(STAMP)

run: venv
	$(BIN)/lorat-serve

# The whole suite or a loud failure: .ci/system-deps installs (as root) or names the programs the tests run;
# LORAT_NO_SKIPS=1 turns any skipped test into a failed run. The SDK's tests run even when the main suite
# failed (make would otherwise stop there), and the exit status is the first failure's.
test: venv
	.ci/system-deps
	.ci/pip-check
	$(BIN)/ruff check .
	status=0; \
	LORAT_NO_SKIPS=1 $(BIN)/python -m pytest -q tests || status=$$?; \
	echo "# The SDK again, installed into a fresh venv without torch, against a real server."; \
	LORAT_NO_SKIPS=1 clients/python/tests/run_isolated.sh || { s=$$?; [ $$status -ne 0 ] || status=$$s; }; \
	exit $$status

lint: venv
	$(BIN)/ruff check .

# Regenerate the wire code after editing proto/ (the generated files are committed).
proto: venv
	$(BIN)/python -m grpc_tools.protoc -I proto --python_out=clients/python --grpc_python_out=clients/python \
		--pyi_out=clients/python proto/lorat/v1/tracker.proto

clean:
	rm -rf $(VENV) .pytest_cache

# Retrain the packaged default model on this CPU (about 45 min on 2 cores; resumes from runs/ if interrupted,
# `rm -rf runs/default-stage*` for a clean run), then print the held-out benchmark table.
.PHONY: default-model
default-model: venv
	$(BIN)/python -m lorat_train.cli --config configs/default-stage1.yaml --no-progress
	$(BIN)/python -m lorat_train.cli --config configs/default-stage2.yaml --no-progress
	$(BIN)/python -m lorat_train.release_default
	$(BIN)/python bench/eval_default.py --extra "stage 1 only (blobs, full)=runs/default-stage1/model.safetensors"
