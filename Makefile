# Reprise: every command of the README. `make` alone lists them.
.DEFAULT_GOAL := help
SHELL := /bin/bash

PYTHON_SYSTEM ?= python3
UV_VERSION := 0.13.9
# bump2version (1.0.1) reads the same .bumpversion.cfg; it lives apart from bump-my-version,
# which installs a module of the same name.
BUMP2VERSION_VERSION := 1.0.1
TOOLS := .tools
UV := $(TOOLS)/bin/uv
TOOLS_STAMP := $(TOOLS)/.uv-$(UV_VERSION)-bump2version-$(BUMP2VERSION_VERSION)
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.synced

export UV_PYTHON_DOWNLOADS := never
# bytecode compiled at install (every later import is fast); UV_COMPILE_BYTECODE=0 skips it
UV_COMPILE_BYTECODE ?= 1
export UV_COMPILE_BYTECODE
export PATH := $(CURDIR)/$(VENV)/bin:$(PATH)

STEPS ?= all
OVERRIDES ?=

# A value given to make reaches its command as one word, as typed: never shell syntax.
# $(call quoted,TEXT) single-quotes TEXT for the shell; $(call flag,--name,TEXT) gives nothing when
# TEXT is empty. OVERRIDES and SERVE_ARGS are split into words by the command, never expanded.
quoted = '$(subst ','\'',$(1))'
flag = $(if $(2),$(1) $(call quoted,$(2)))

PART ?=
VERSION ?=
DEST ?=
REMOTE ?=
ORIGIN ?=
MERMAID ?=
# make predict (RELEASE and MODEL as for make serve)
INPUT ?=
OUTPUT ?=
ENGINE ?= local
ON_ERROR ?= fail

.PHONY: help setup run test test-unit test-e2e typecheck lint format lock clean release verify restore promote \
	releases release-components publish-components predict

help: ## List the commands
	@grep -hE '^[a-zA-Z_-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-19s %s\n", $$1, $$2}'

$(TOOLS_STAMP):
	$(PYTHON_SYSTEM) -m venv $(TOOLS)
	$(TOOLS)/bin/pip install --quiet uv==$(UV_VERSION) bump2version==$(BUMP2VERSION_VERSION)
	@touch $@

$(STAMP): $(TOOLS_STAMP) uv.lock pyproject.toml
	$(UV) sync --frozen --all-extras --python $(PYTHON_SYSTEM)
	@touch $@

setup: $(STAMP) ## Make the pinned environment (.venv) from uv.lock; does nothing when it is current

run: setup ## Run the whole pipeline on the bundled data (STEPS=..., OVERRIDES="key=value ...")
	$(PY) -m reprise run --steps $(call quoted,$(STEPS)) --overrides $(call quoted,$(OVERRIDES))

# Each end-to-end file's store is made once, in one worker. Three workers on two cores: the end-to-end
# tests wait (servers starting, git, HTTP, installs) about a fifth of the time, which a third fills.
PYTEST_WORKERS ?= 3

test: lint typecheck ## Run the lint and the type check, then every test: the unit and the end-to-end tier
	$(PY) -m pytest -n $(PYTEST_WORKERS) --dist loadgroup

test-unit: setup ## Run the fast tier only: tests/unit and the components' tests (no server, no pipeline)
	$(PY) -m pytest tests/unit components-repo -m "not e2e"

test-e2e: setup ## Run the end-to-end tier only: tests/e2e (git servers, tracking stores, pipelines; minutes)
	$(PY) -m pytest tests/e2e -n $(PYTEST_WORKERS) --dist loadgroup

typecheck: setup ## Check the platform's types (mypy: every function typed, no Any returned as a type)
	$(VENV)/bin/mypy

release: setup ## Cut a release: PART=patch|minor|major (runs the pipeline, writes releases/X.Y.Z.yaml, tags)
	$(PY) -m reprise release $(call flag,--part,$(PART))

verify: setup ## Rerun release VERSION=X.Y.Z and compare every digest and metric with its manifest
	$(PY) -m reprise verify $(call flag,,$(VERSION))

restore: setup ## Put release VERSION=X.Y.Z (project and pinned components) in DEST=folder
	$(PY) -m reprise restore $(call flag,,$(VERSION)) $(call flag,,$(DEST))

promote: setup ## Alias the model of release VERSION=X.Y.Z "prod" (an older one: a rollback)
	$(PY) -m reprise promote $(call flag,,$(VERSION))

releases: setup ## List the release tags with their key metrics (ORIGIN=1: the origin's too)
	$(PY) -m reprise releases $(if $(filter 1 yes true,$(ORIGIN)),--remote)

release-components: setup ## Cut a release of components-repo/: PART=patch|minor|major
	$(PY) -m reprise release-components $(call flag,--part,$(PART))

publish-components: setup ## Push components-repo/ and its tags as a repository of its own to REMOTE=uri
	$(PY) -m reprise publish-components $(call flag,,$(REMOTE))

predict: setup ## Score a file offline: INPUT=in.parquet|csv OUTPUT=out.parquet|csv (RELEASE=, MODEL=, ENGINE=local|spark, ON_ERROR=fail|quarantine, OVERWRITE=1)
	$(PY) -m reprise predict --input $(call quoted,$(INPUT)) --output $(call quoted,$(OUTPUT)) \
	  $(call flag,--engine,$(ENGINE)) $(call flag,--on-error,$(ON_ERROR)) \
	  $(call flag,--release,$(RELEASE)) $(call flag,--model,$(MODEL)) \
	  $(if $(filter 1 yes true,$(OVERWRITE)),--overwrite)

# make server: PORT= of the MLflow server (5000 unless PORT is given on the command line or in
# the environment: make serve's 8000 is not it).
SERVER_PORT := $(if $(filter command line environment,$(origin PORT)),$(PORT),5000)
SERVER_WORKERS ?= 2
.PHONY: server server-stop

server: setup ## Start a team's tracking server here: PostgreSQL + mlflow server on 127.0.0.1:5000 (PORT=), proxied artifacts
	$(PY) -m reprise server start --port $(call quoted,$(SERVER_PORT)) --workers $(call quoted,$(SERVER_WORKERS))

server-stop: setup ## Stop the tracking server that make server started (both processes, by PID)
	$(PY) -m reprise server stop

# make ui: PORT= of the MLflow UI (5001 unless PORT is given on the command line or in the
# environment: make server's 5000 and make serve's 8000 are not it).
UI_PORT := $(if $(filter command line environment,$(origin PORT)),$(PORT),5001)
.PHONY: ui

ui: setup ## Show the runs in the MLflow UI on 127.0.0.1:5001 (PORT=); with an http(s) MLFLOW_TRACKING_URI, name the server's URL
	$(PY) -m reprise ui --port $(call quoted,$(UI_PORT))

# make serve: the model to serve (RELEASE=X.Y.Z a release's, MODEL=a models:/ URI; neither: the
# prod alias, followed as it moves) and where; SERVE_ARGS passes more (--poll-seconds, ...).
RELEASE ?=
MODEL ?=
HOST ?= 127.0.0.1
PORT ?= 8000
WORKERS ?= 1
SERVE_ARGS ?=
.PHONY: serve

serve: setup ## Serve the prod model over HTTP (RELEASE=X.Y.Z or MODEL=uri, PORT=8000, WORKERS=1, SERVE_ARGS=...)
	read -r -a more <<< $(call quoted,$(SERVE_ARGS)); \
	$(PY) -m reprise serve $(call flag,--release,$(RELEASE)) $(call flag,--model,$(MODEL)) \
	  $(call flag,--host,$(HOST)) $(call flag,--port,$(PORT)) $(call flag,--workers,$(WORKERS)) "$${more[@]}"

lint: setup ## Check style and common mistakes (ruff), and that the platform declares what it imports (deptry)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/deptry reprise project

format: setup ## Rewrite the code in the project's style (ruff)
	$(VENV)/bin/ruff format .
	$(VENV)/bin/ruff check --fix .

# components-repo/ locks itself (its uv.lock, then its components' requirements.txt), as it does
# in a clone of its own.
lock: $(TOOLS_STAMP) ## Re-resolve uv.lock and every requirements.txt after a change of pins
	$(UV) lock
	$(UV) export --frozen --no-hashes --no-dev --no-emit-project -q -o $(TOOLS)/constraints.txt
	cd project && $(CURDIR)/$(UV) pip compile -q requirements.in -c $(CURDIR)/$(TOOLS)/constraints.txt \
	  -o requirements.txt --python-version 3.11 --no-header --no-annotate
	$(MAKE) -C components-repo lock

.PHONY: graph
graph: setup ## Print the pipeline the project declares (MERMAID=1: as a Mermaid flowchart)
	$(PY) -m reprise graph $(if $(filter 1 yes true,$(MERMAID)),--mermaid)

NAME ?=
.PHONY: new-component
new-component: setup ## Write components-repo/NAME/: MLproject, locked env, run.py, logic module, its test
	$(PY) -m reprise new-component -- $(call quoted,$(NAME))

.PHONY: doctor
doctor: setup ## End runs left RUNNING by a process that is gone, remove their temporary folders; list what changed
	$(PY) -m reprise doctor

clean: ## Remove local run state (MLflow store, artifacts, W&B offline runs, outputs) and caches
	rm -rf mlflow.db mlartifacts mlruns wandb outputs multirun .pytest_cache .ruff_cache .mypy_cache
	find . -name __pycache__ -not -path './.venv/*' -prune -exec rm -rf {} +
