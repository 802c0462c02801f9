# captcha-bench: `make bench` runs the comparison, `make test` the tests, `make docs` the site;
# each sets up .venv first.
VENV ?= .venv
PY := $(VENV)/bin/python
SUITE ?=

APPROACH ?= crnn
DATASET ?= captcha-v2
TRIALS ?= 10
EPOCHS ?=

STORAGE ?=
WORKERS ?= 1

.PHONY: bench worker test docs lint format list ui dashboard tune clean gpu-check

$(VENV)/.installed: pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[dev,docs]'
	touch $@

# The main job: suites of experiments/ (default with CUDA: leaderboard and leaderboard-tuned, into
# reports/leaderboard/index.html; else quick, into reports/quick/), tracked in MLflow, tuned with
# Optuna. `python -m bench run --plan` sizes it first. Interrupt it and run it again to resume.
bench: $(VENV)/.installed
	$(PY) -m bench run $(if $(SUITE),--suite $(SUITE))

# One worker of a suite shared by many machines: the same STORAGE (an Optuna RDB URL, e.g.
# postgresql+psycopg2://user:pw@db/optuna) and MLFLOW_TRACKING_URI (an MLflow server) everywhere.
worker: $(VENV)/.installed
	@test -n "$(STORAGE)" || { echo "make worker needs STORAGE=<Optuna RDB URL shared by all workers>, e.g. STORAGE=postgresql+psycopg2://user:pw@db/optuna (and MLFLOW_TRACKING_URI=<MLflow server>); on one machine, python -m bench run --workers K is enough" >&2; exit 2; }
	$(PY) -m bench run $(if $(SUITE),--suite $(SUITE)) --storage $(STORAGE) --workers $(WORKERS) --quiet

test: $(VENV)/.installed
	$(PY) -m ruff check bench tests experiments
	$(PY) -m pytest -q -rs --durations=15

# The documentation site (mkdocs.yml, docs/, reports/*/README.md) into site/; a broken link fails it
docs: $(VENV)/.installed
	NO_MKDOCS_2_WARNING=1 $(PY) -m mkdocs build --strict --site-dir site

# MLflow's UI on the runs, opened in its training view (the link is printed first)
ui: $(VENV)/.installed
	$(PY) -m bench ui

# optuna-dashboard on the tuning studies
dashboard: $(VENV)/.installed
	$(PY) -m bench dashboard

tune: $(VENV)/.installed
	$(PY) -m bench tune --approach $(APPROACH) --dataset $(DATASET) --trials $(TRIALS) $(if $(EPOCHS),--epochs $(EPOCHS))

list: $(VENV)/.installed
	$(PY) -m bench list

lint: $(VENV)/.installed
	$(PY) -m ruff check bench tests experiments
	$(PY) -m ruff format --check bench tests experiments

format: $(VENV)/.installed
	$(PY) -m ruff format bench tests experiments
	$(PY) -m ruff check --fix bench tests experiments

# Every GPU measurement in one time-boxed run (about 9 minutes) on a CUDA machine where the project
# imports with PYTHON (no virtual environment needed there); results packed into OUT.
PYTHON ?= python3
OUT ?= gpu-check-out
gpu-check:
	PYTHON=$(PYTHON) .ci/gpu-check $(OUT)

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache site
