# dmn_localization: the two commands of the README, `make demo` and `make test`.
SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
VENV := .venv
RUN := . $(VENV)/bin/activate &&
# Tests render off-screen and talk DDS on loopback; xvfb-run gives them a display.
XVFB := xvfb-run -a -s "-screen 0 1024x768x24"
PYTEST_ARGS ?=

.PHONY: setup test demo bench data results results-4m lint clean

## setup: install everything into .venv (idempotent, seconds when nothing changed)
setup:
	bash scripts/setup.sh

## test: set up, then run the whole test suite (linters, conversions, DDS round trip)
test: setup
	$(RUN) $(XVFB) python -m pytest $(PYTEST_ARGS)

## demo: set up, then localize a simulated robot live over DDS (dmn_demo, a few minutes)
demo: setup
	$(RUN) dmn_env_check
	$(RUN) dmn_demo --out runs/demo

## bench: set up, then run the benchmarks (not tests: tables and JSON; about 40 minutes)
bench: setup
	$(RUN) python -m dmn_localization.bench.core_bench --out runs/bench/core.json
	$(RUN) python -m dmn_localization.bench.map_sharing_bench --out runs/bench/map_sharing.json
	$(RUN) python -m dmn_localization.bench.node_bench --out runs/bench/node.json
	$(RUN) python -m dmn_localization.bench.kidnap_bench --seeds 20 \
		--out runs/bench/kidnap.json

## data: set up, then generate the default Rooms and Mazes datasets into data/ (resumable)
DATASETS := $(foreach d,rooms mazes,$(foreach s,train val test,data/$(d)-$(s)/manifest.json))
data: setup $(DATASETS)
data/%/manifest.json:
	$(RUN) dmn_dataset generate --domain $(word 1,$(subst -, ,$*)) \
		--split $(word 2,$(subst -, ,$*)) --out data/$*

## results: train every learned model of the paper with one budget (table `4m` of
## dmn_localization/learning/results_table.py: 4M samples + 300k at a third of the rate,
## worlds moved and turned), evaluate, write RESULTS.md (docs/training.md, "The paper's
## table"). 20 runs of about 2.4 hours of one core, RESULTS_JOBS at a time; resumable:
## rerun until done. Finished runs are recorded in results-4m/: commit it with RESULTS.md
RESULTS_JOBS ?= 2
results: data
	$(RUN) dmn_results --table 4m --data data --jobs $(RESULTS_JOBS) --out RESULTS.md

## results-4m: another name of `make results`
results-4m: results

## lint: only the ament linters
lint: setup
	$(RUN) python -m pytest -m linter $(PYTEST_ARGS)

## clean: remove the venv and build products
clean:
	rm -rf $(VENV) build install log *.egg-info
