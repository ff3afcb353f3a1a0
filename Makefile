# Build, test and lint entry points for the volsnap.openstack collection.
# `make help` lists the targets; docs/development.md explains them.

SHELL := /usr/bin/env bash
.SHELLFLAGS := -euo pipefail -c
.DEFAULT_GOAL := help

ROOT       := $(abspath $(dir $(lastword $(MAKEFILE_LIST))))
VENV       := $(ROOT)/.venv
PY         := $(VENV)/bin/python
BUILD_ROOT := $(ROOT)/.build
COLL       := $(BUILD_ROOT)/ansible_collections/volsnap/openstack
LAB        := $(ROOT)/tests/lab/lab.sh
SANITY_PYTHON ?= 3.12
# extra arguments, e.g. make units PYTEST_ARGS='-k qcow2 -x'
PYTEST_ARGS ?=
SANITY_ARGS ?=
# e.g. make molecule MOLECULE_ARGS='ceph_client_keyrings'
MOLECULE_ARGS ?=

# Tools of the venv come first (ansible-test, ansible-playbook, ansible-lint).
export PATH := $(VENV)/bin:$(PATH)
export VOLSNAP_BUILD_ROOT := $(BUILD_ROOT)
export ANSIBLE_COLLECTIONS_PATH := $(BUILD_ROOT)
ifeq ($(CI),true)
export ANSIBLE_NOCOLOR := 1
export ANSIBLE_FORCE_COLOR := 0
export NO_COLOR := 1
endif
export PIP_DISABLE_PIP_VERSION_CHECK := 1

.PHONY: help deps build sanity units integration molecule lint typecheck changelog-lint docs test demo bench ee clean

help: ## List the targets
	@echo "volsnap.openstack make targets:"
	@grep -hE '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | sed -E 's/^([a-z-]+):.*## (.*)/  \1\t\2/' | expand -t 18

# VOLSNAP_DEPS_DONE=1: deps already ran in this `make test` (scripts/test-all.sh) or this `make lint`; each later
# stage would run bootstrap.sh again for nothing (3-7 s each on a busy 2-core machine).
deps: ## Install apt packages, .venv (Python 3.12 + requirements-dev.txt), ansible-test pip stand-in
	@if [[ $${VOLSNAP_DEPS_DONE:-} == 1 ]]; then echo "deps: done earlier in this run (VOLSNAP_DEPS_DONE=1)"; \
	  else bash $(ROOT)/scripts/bootstrap.sh; fi

build: ## Sync the working tree into .build/ansible_collections/volsnap/openstack
	bash $(ROOT)/scripts/sync-build.sh

# Targets below need the venv; `deps` is a no-op when it is up to date.
sanity: deps build ## ansible-test sanity --venv --python 3.12 in the build copy (all tests, no ignore entries)
	cd $(COLL) && ansible-test sanity --venv --python $(SANITY_PYTHON) --color no $(SANITY_ARGS)

units: deps build ## pytest tests/unit in the build copy (PYTHONPATH=.build)
	bash $(ROOT)/scripts/run-pytest.sh units tests/unit $(PYTEST_ARGS)

integration: deps build ## Start the lab (tests/lab/lab.sh start), then pytest tests/integration
	@if [[ -f $(LAB) ]]; then echo "integration: bash tests/lab/lab.sh install && start"; \
	  bash $(LAB) install </dev/null && bash $(LAB) start </dev/null; \
	  else echo "integration: tests/lab/lab.sh not found, no lab started"; fi
	bash $(ROOT)/scripts/run-pytest.sh integration tests/integration --durations=25 $(PYTEST_ARGS)

molecule: deps build ## Start the Ceph lab, then every molecule scenario (extensions/molecule) over namespace hosts
	bash $(LAB) install ceph </dev/null
	bash $(LAB) start ceph </dev/null
	bash $(ROOT)/scripts/molecule.sh $(MOLECULE_ARGS)

lint: deps build ## ansible-lint (production), antsibull-docs lint, antsibull-changelog lint, shellcheck, mypy --strict
	cd $(COLL) && ansible-lint --offline
	cd $(COLL) && antsibull-docs lint-collection-docs --plugin-docs .
	VOLSNAP_DEPS_DONE=1 $(MAKE) --no-print-directory changelog-lint
	VOLSNAP_DEPS_DONE=1 $(MAKE) --no-print-directory typecheck
	cd $(COLL) && shopt -s nullglob && files=(.ci/run scripts/*.sh tests/lab/*.sh tests/hosts/*.sh) && \
	  echo "shellcheck $${files[*]}" && shellcheck -x "$${files[@]}"

typecheck: deps build ## mypy --strict over plugins/module_utils (mypy.ini)
	cd $(BUILD_ROOT) && MYPYPATH=$(BUILD_ROOT) mypy --config-file $(ROOT)/mypy.ini -p ansible_collections.volsnap.openstack.plugins.module_utils

changelog-lint: deps build ## antsibull-changelog lint
	cd $(COLL) && antsibull-changelog lint

docs: deps build ## HTML docs site (plugins, roles, user guide) with antsibull-docs + Sphinx -W -n in .build/docs, then check it
	bash $(ROOT)/scripts/build-docs.sh

test: ## deps, sanity, units, integration, molecule, lint, docs; stop at first failure (CI: stop lab at end)
	MAKE="$(MAKE)" bash $(ROOT)/scripts/test-all.sh

demo: deps build ## Start the lab and run playbooks/demo.yml against it (ansible-playbook volsnap.openstack.demo)
	@if [[ ! -f $(COLL)/playbooks/demo.yml ]]; then \
	  echo "demo: playbooks/demo.yml does not exist (or is ignored by git); nothing to run" >&2; exit 1; fi
	@if [[ ! -f $(LAB) ]]; then echo "demo: tests/lab/lab.sh does not exist; cannot start the lab" >&2; exit 1; fi
	bash $(LAB) install </dev/null
	bash $(LAB) start </dev/null
	cd $(COLL) && ansible-playbook volsnap.openstack.demo

bench: deps build ## Run every benchmarks/bench_*.py with the venv python (PYTHONPATH=.build)
	@cd $(COLL) && shopt -s nullglob && benches=(benchmarks/bench_*.py) && \
	  if (( $${#benches[@]} == 0 )); then echo "bench: no benchmarks/bench_*.py found" >&2; exit 1; fi && \
	  for b in "$${benches[@]}"; do echo "== bench: $$b"; PYTHONPATH=$(BUILD_ROOT) $(PY) "$$b"; done

ee: deps build ## Build the collection tarball and an execution-environment build context (ansible-builder create) in .build/ee
	rm -rf $(BUILD_ROOT)/ee $(ROOT)/ee/collections
	mkdir -p $(BUILD_ROOT)/ee $(ROOT)/ee/collections
	cd $(COLL) && ansible-galaxy collection build --force --output-path $(BUILD_ROOT)/ee .
	cp $(BUILD_ROOT)/ee/volsnap-openstack-*.tar.gz $(ROOT)/ee/collections/volsnap-openstack.tar.gz
	ansible-builder create -f $(ROOT)/ee/execution-environment.yml -c $(BUILD_ROOT)/ee/context
	@echo "ee: build context in $(BUILD_ROOT)/ee/context (podman build -f Containerfile there)"

clean: ## Remove .build and tests/output
	rm -rf $(BUILD_ROOT) $(ROOT)/tests/output
