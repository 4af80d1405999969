# Every target sets up what it needs first: a fresh clone needs only Python 3.11+ and make.
PYTHON ?= $(shell command -v python3.11 2>/dev/null || command -v python3)
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: install demo test bench lint clean

install: $(STAMP)

$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "Python 3.11+ is required (set PYTHON=...)")'
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	@touch $(STAMP)

# The embedded default: 30 days of seeded synthetic BTC/USDT bars, replayed through sma_cross on
# 15m bars with the staging risk profile; writes the journal and an HTML report under reports/.
demo: install
	$(BIN)/python cli.py data synth --symbols BTC/USDT --days 30 --scenario trend --seed 7
	$(BIN)/python cli.py replay --days 30 --symbols BTC/USDT --timeframe 15m --strategy sma_cross \
	    --profile staging --set run.exchange=synthetic
	@echo "demo: done. Open the report printed above; list runs with: $(BIN)/python cli.py runs"

test: install
	$(BIN)/python -m pytest -q

bench: install
	$(BIN)/python -m tests.bench

lint: install
	$(BIN)/ruff check harness strategies tests cli.py

clean:
	rm -rf $(VENV) build .pytest_cache .ruff_cache
