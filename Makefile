# Two commands on a fresh machine: `make reproduce` (the whole study) and `make test`.
# Each creates .venv from requirements.txt when it is missing or out of date.
# `make site` renders the committed reference run as a static website into build/site/ (python -m rcl.site).
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
SITE_STAMP := $(VENV)/.site-installed
ARGS   ?=

.PHONY: venv test lint reproduce bench lab clean-runs site

venv: $(STAMP)

$(STAMP): requirements.txt pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -r requirements.txt
	$(BIN)/python -m pip install -q --no-deps torchattacks==3.5.1
	$(BIN)/python -m pip install -q --no-deps -e .
	$(BIN)/python -m ipykernel install --sys-prefix --name python3 >/dev/null
	touch $(STAMP)

# the website's packages, beside the project's pins (requirements-site.txt)
$(SITE_STAMP): $(STAMP) requirements-site.txt
	$(BIN)/python -m pip install -q -r requirements-site.txt
	touch $(SITE_STAMP)

# the course as a static website in build/site/, from the committed reference run; nothing executed, offline once
# npm's two packages are cached in build/site-assets/; any Sphinx warning fails it
site: $(SITE_STAMP)
	$(BIN)/python -m rcl.site

lint: venv
	$(BIN)/ruff format --check rcl tests notebooks docs/site
	$(BIN)/ruff check rcl tests notebooks docs/site

# unit tests, then every notebook under nbval (smoke profile), in one pytest run
test: lint $(SITE_STAMP)
	sh tools/install_browser.sh
	$(BIN)/python -m pytest -q tests notebooks --nbval-lax --nbval-current-env

reproduce: venv
	$(BIN)/python -m rcl.reproduce $(ARGS)

bench: venv
	$(BIN)/python -m rcl.bench $(ARGS)

lab: venv
	$(BIN)/jupyter lab notebooks/

clean-runs:
	rm -rf runs/
