# Two commands matter: `make demo` and `make test`. Both create .venv on first use.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
export FASCL_HOME ?= var

.PHONY: demo test test-slow lint bench clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/fascl data synth --assets 500 --years 10 --seed 0
	$(BIN)/fascl data info
	@echo
	@echo "Next, try:"
	@echo "  $(BIN)/fascl data info --raw"
	@echo "  $(BIN)/fascl data import ../shared/data/stocknet/ohlcv.parquet --name stocknet --assets ../shared/data/stocknet/assets.csv"
	@echo "  $(BIN)/fascl data info --name stocknet"

test: $(STAMP)
	$(BIN)/python -m pytest -m "not slow" -q

test-slow: $(STAMP)
	$(BIN)/python -m pytest -m slow -q

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/hadolint --config .hadolint.yaml docker/Dockerfile docker/Dockerfile.gpu

bench: $(STAMP)
	$(BIN)/python bench/import_speed.py

clean:
	rm -rf $(VENV) var reports .pytest_cache
