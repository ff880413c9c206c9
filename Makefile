# Two commands matter: `make demo` and `make test`. Everything else is a helper for them.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# torch/torchvision pair to install first; override for other platforms, e.g.
#   make test TORCH_SPEC="torch torchvision --index-url https://download.pytorch.org/whl/cpu"
TORCH_SPEC ?= torch==2.14.1 torchvision==0.29.1
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
SYSTEM_PACKAGES := ffmpeg chromium chromium-driver postgresql
# seconds apt-get waits for another apt/dpkg process to release its lock before failing
APT_LOCK_TIMEOUT ?= 300
# port of `make demo` (checked before anything is built); empty: VTR_PORT or 8000
PORT ?=

.DEFAULT_GOAL := help
.PHONY: help venv sysdeps demo test test-all model baseline splits lint format clean

help: ## List the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-10s %s\n", $$1, $$2}'

venv: $(VENV)/.installed ## Create .venv and install the project with its test and distributed (Ray) extras

$(VENV)/.installed: setup.cfg pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip wheel
	$(BIN)/pip install -q $(TORCH_SPEC)
	$(BIN)/pip install -q -e '.[test,dev,distributed]'
	# clip-retrieval's client, for the compatibility tests; its own deps are its whole back end
	$(BIN)/pip install -q --no-deps 'clip-retrieval==2.45.0'
	touch $@

sysdeps: ## Install ffmpeg, chromium and postgresql with apt-get when any is missing
	@missing=""; \
	command -v ffmpeg >/dev/null || missing="$$missing ffmpeg"; \
	command -v chromium >/dev/null || missing="$$missing chromium chromium-driver"; \
	ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || missing="$$missing postgresql"; \
	if [ -n "$$missing" ]; then \
		echo "installing system packages:$$missing"; \
		apt="apt-get -o DPkg::Lock::Timeout=$(APT_LOCK_TIMEOUT)"; \
		$(SUDO) $$apt update -qq && DEBIAN_FRONTEND=noninteractive $(SUDO) $$apt install -y -qq $$missing >/dev/null; \
	fi

demo: venv sysdeps ## Generate a sample library, index it with the shipped model, serve the UI on :8000 (PORT=8080 for another)
	$(BIN)/python -m webapp.cli demo $(if $(PORT),--port $(PORT))

test: venv sysdeps ## Run the test suite (default markers: everything but slow)
	$(BIN)/pytest

test-all: venv sysdeps ## Run every test, slow ones included
	$(BIN)/pytest -m ""

RUN_MAIN := runs/viclip-tiny-synth/viclip-tiny-synth
RUN_BASE := runs/viclip-tiny-synth-framemean/viclip-tiny-synth-framemean
CONFIGS := retrieval/train_configs
VAL := data/synth-val-s5
TEST := data/synth-test-s11
# seeds: 0 trains, 5 fits the default ranking (val), 11 tests; none of them sees another's clips
define make_splits
	[ -f $(VAL)/captions.jsonl ] || $(BIN)/vtr synth $(VAL) --count 1000 --seed 5 --split val
	[ -f $(TEST)/captions.jsonl ] || $(BIN)/vtr synth $(TEST) --count 1000 --seed 11 --split test
endef
# $(call train_fit_eval,MODEL): data and frame cache, training (resumable), the splits, the fitted
# ranking and the test report of runs/MODEL/MODEL, from retrieval/train_configs/MODEL.json
define train_fit_eval
	$(BIN)/vtr train --config $(CONFIGS)/$(1).json --prepare-only
	mkdir -p runs/$(1)
	$(BIN)/vtr train --config $(CONFIGS)/$(1).json --resume > runs/$(1)/$(1).train.log 2>&1 || { tail -c 600 runs/$(1)/$(1).train.log; exit 1; }
	$(make_splits)
	$(BIN)/vtr fit-ranking --data $(VAL) --checkpoint runs/$(1)/$(1).safetensors
	$(BIN)/vtr eval --data $(TEST) --checkpoint runs/$(1)/$(1).safetensors --json --output runs/$(1)/$(1).eval.json >/dev/null
endef

model: venv sysdeps ## Reproduce the shipped demo model: data, train (one stage, both cores), fit the ranking, evaluate, copy to retrieval/weights/
	$(call train_fit_eval,viclip-tiny-synth)
	cp $(RUN_MAIN).safetensors retrieval/weights/viclip-tiny-synth.safetensors
	cp $(RUN_MAIN).eval.json retrieval/weights/viclip-tiny-synth.eval.json
	@echo "shipped: retrieval/weights/ (set \"default_pretrained\" in retrieval/model_configs/viclip-tiny-synth.json if new)"

baseline: venv sysdeps ## Reproduce the frame-average baseline's report: the same recipe with frame embeddings averaged
	$(call train_fit_eval,viclip-tiny-synth-framemean)
	cp $(RUN_BASE).eval.json retrieval/weights/viclip-tiny-synth-framemean.eval.json

splits: venv ## Generate the validation (seed 5) and test (seed 11) splits when missing
	$(make_splits)

lint: venv ## Lint with ruff
	$(BIN)/ruff check .

format: venv ## Format with ruff
	$(BIN)/ruff format .

clean: ## Remove the virtualenv and caches
	rm -rf $(VENV) .pytest_cache .ruff_cache *.egg-info
