# Two commands matter: `make demo` and `make test`. Both create .venv on first use.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
export FASCL_HOME ?= var

.PHONY: demo test test-slow reliability lint bench clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(STAMP)

# The whole product on the embedded synthetic market: bars, a model, an index, the service.
demo: $(STAMP)
	$(BIN)/fascl data synth --assets 500 --years 10 --seed 0
	$(BIN)/fascl data info
	$(BIN)/fascl train --minutes 4
	$(BIN)/fascl db upgrade
	$(BIN)/fascl db load-assets
	$(BIN)/fascl index build --model $(FASCL_HOME)/models/synthetic-small --from 2019-01-01
	@echo
	@echo "Serving on http://127.0.0.1:8000 (Ctrl-C stops). In another shell, try:"
	@echo "  curl -s 'localhost:8000/similar/ABAG?k=5' | python3 -m json.tool"
	@echo "  curl -s 'localhost:8000/similar/ABAG?date=2019-05-03&k=5&include_realized=true'"
	@echo "  curl -s 'localhost:8000/assets?q=ab'"
	@echo "  open http://127.0.0.1:8000/docs"
	@echo "  $(BIN)/fascl evaluate --model $(FASCL_HOME)/models/synthetic-small --out reports/synthetic"
	@echo
	@echo "The page (peers, their chart, Pearson beside them, the track record): http://127.0.0.1:8000/"
	@echo
	$(BIN)/fascl serve

test: $(STAMP)
	$(BIN)/lint-imports
	$(BIN)/python -m pytest -m "not slow" -q

test-slow: $(STAMP)
	$(BIN)/python -m pytest -m slow -q

# The reliability suite at its full level (tests/reliability; `make test` runs its fast level): a real
# `fascl serve` on a real index, on SQLite and PostgreSQL, under load, faults and a 10-minute soak
# (about 30 minutes in all). Writes docs/RELIABILITY.md (and docs/reliability-soak.png) even when a
# scenario fails, and exits with pytest's status. Needs wrk (apt-get install wrk) and PostgreSQL.
RELIABILITY_RESULTS ?= var/reliability/results.jsonl
reliability: $(STAMP)
	mkdir -p $(dir $(RELIABILITY_RESULTS)) docs
	rm -f $(RELIABILITY_RESULTS)
	FASCL_RELIABILITY=full FASCL_RELIABILITY_RESULTS=$(abspath $(RELIABILITY_RESULTS)) \
	    $(BIN)/python -m pytest tests/reliability -m reliability -q -rA -p no:cacheprovider; \
	status=$$?; \
	$(BIN)/python bench/reliability_report.py $(RELIABILITY_RESULTS) --out docs/RELIABILITY.md; \
	exit $$status

lint: $(STAMP)
	$(BIN)/lint-imports
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/hadolint --config .hadolint.yaml docker/Dockerfile docker/Dockerfile.gpu

bench: $(STAMP)
	$(BIN)/python bench/import_speed.py
	$(BIN)/python bench/train_throughput.py
	$(BIN)/python bench/index_speed.py
	$(BIN)/python bench/reindex_speed.py
	$(BIN)/python bench/route_cost.py
	$(BIN)/python bench/query_load.py

clean:
	rm -rf $(VENV) var reports .pytest_cache
