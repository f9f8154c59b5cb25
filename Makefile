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

# Retrain the packaged default model (about 2 h on 2 CPU cores, much less on a GPU, which is used when present;
# resumes from runs/ if interrupted, `rm -rf runs/default-*` for a clean run): stages 1-2 on synthetic data
# (-> lorat-synthetic.safetensors), stage 3 on real photographs gathered from Debian packages (apt-get
# download + dpkg -x into ~/.cache/lorat-data, see lorat_train/gather.py), then the real + synthetic tables.
.PHONY: default-model
default-model: venv
	$(BIN)/python -m lorat_train.cli --config configs/default-stage1.yaml
	$(BIN)/python -m lorat_train.cli --config configs/default-stage2.yaml
	cp lorat_infer/default_model/lorat-default.safetensors lorat_infer/default_model/lorat-synthetic.safetensors
	$(BIN)/python -m lorat_train.gather
	$(BIN)/python -m lorat_train.default_real --config configs/default-real.yaml
	$(BIN)/python -m lorat_train.default_real --config configs/default-hold.yaml
	$(BIN)/python -m lorat_train.tune_window --model runs/default-hold/model.safetensors --count 32 --weights 0.3,0.45,0.6,0.75 --size-lrs 1,0.6,0.45,0.3,0.2 --write
	$(BIN)/python -m lorat_train.release_default
	$(BIN)/python bench/eval_default.py --extra "stage 3=runs/default-real/model.safetensors" --render bench/results
