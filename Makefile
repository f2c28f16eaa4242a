# scaleserve developer entry points. `make help` lists them.
SHELL := /bin/bash
PY := .venv/bin/python
PYTEST := $(PY) -m pytest

.PHONY: help setup up down demo test test-unit test-engine test-gateway test-control-plane test-e2e lint fmt proto cluster-binaries images clean

help:  ## list targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-20s %s\n", $$1, $$2}'

setup:  ## create the pinned virtual environment (cached), install scaleserve, build the tiny model
	@bash scripts/setup.sh

up: setup cluster-binaries  ## the main job: local cluster, operator, sample LLMEndpoint on the tiny model, one streamed answer
	@$(PY) -m scaleserve dev up

down:  ## stop everything `make up` started and remove its files
	@$(PY) -m scaleserve dev down

demo: setup  ## just an engine and a gateway on the tiny model (no cluster); stream one answer
	@$(PY) -m scaleserve demo

test: setup  ## every test layer this machine can run
	@bash scripts/test.sh all

test-unit: setup cluster-binaries  ## pure, fast tests only (no processes)
	@$(PYTEST) -m unit tests/unit

test-engine: setup  ## engine tests on real vLLM (CPU)
	@$(PYTEST) -m engine tests/engine

test-gateway: setup  ## gateway tests with real engines and real HTTP clients
	@$(PYTEST) -m gateway tests/gateway

test-control-plane: setup cluster-binaries  ## operator and cluster tests on a real control plane with kwok nodes
	@$(PYTEST) -m control_plane tests/control_plane

test-e2e: setup cluster-binaries  ## whole-system scenarios
	@$(PYTEST) -m e2e e2e

lint: setup  ## ruff, mypy, import-linter
	@bash scripts/lint.sh

fmt: setup  ## apply ruff's formatter and autofixes
	@.venv/bin/ruff format . && .venv/bin/ruff check --fix .

proto: setup  ## regenerate the engine protocol's Python bindings
	@bash scripts/gen_proto.sh

cluster-binaries:  ## build (or restore from cache) kube-apiserver, controller-manager, scheduler, kwok, helm
	@bash e2e/cluster/build.sh

images:  ## build the operator and gateway images without Docker (cached); IMAGES="engine-cpu" for the CPU engine
	@bash images/build.sh $(IMAGES)

clean:  ## remove the .venv link and local build outputs (caches outside the checkout stay)
	rm -rf .venv .pytest_cache .mypy_cache .ruff_cache build *.egg-info
