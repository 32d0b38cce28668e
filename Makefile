# dmn_localization: the two commands of the README, `make demo` and `make test`.
SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
VENV := .venv
RUN := . $(VENV)/bin/activate &&
# Tests render off-screen and talk DDS on loopback; xvfb-run gives them a display.
XVFB := xvfb-run -a -s "-screen 0 1024x768x24"
PYTEST_ARGS ?=

.PHONY: setup test demo bench data results results-4m results-3m results-in-place lint clean

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

## results: train every learned model of the paper with one budget on worlds moved and
## turned, evaluate, write RESULTS.md (docs/training.md, "The three tables"): 4M samples
## + 300k at a third of the rate, PF-DMN with the
## attention prior, fixed rates (20 runs of about 2.4 hours of one core; resumable: rerun
## until done; RESULTS_JOBS runs at a time; finished runs are recorded in results-4m/:
## commit it with RESULTS.md)
RESULTS_JOBS ?= 2
MOVED_OPTIONS := --finish-samples 300000 --frame-shift 0.5 \
	--frame-turn 180 --model-option dmn-pf:attention_prior=2 \
	--models dmn-pf dmn-regression image-pf image-regression vector-pf vector-regression \
	--lr-grid 3e-4 --lr vector-pf/mazes=1e-4 --memory-format channels_last \
	--seeds dmn-regression/rooms=0,1,2 --seeds image-pf/rooms=0 \
	--seeds vector-pf/mazes=0,1,2 --seeds image-pf/mazes=0 --seeds vector-regression/mazes=0
MOVED_4M_PROTOCOL := --budget-samples 4000000 $(MOVED_OPTIONS)
results: data
	$(RUN) dmn_results --data data --runs runs/results-4m --records results-4m \
		--jobs $(RESULTS_JOBS) $(MOVED_4M_PROTOCOL) --out RESULTS.md

## results-4m: another name of `make results`
results-4m: results

## results-3m: the same table at 3M samples + 300k: writes RESULTS-3m.md, records in
## results/ (20 runs of about 2 hours of one core, all recorded: it trains
## nothing new)
MOVED_PROTOCOL := --budget-samples 3000000 $(MOVED_OPTIONS)
results-3m: data
	$(RUN) dmn_results --data data --runs runs/results --jobs $(RESULTS_JOBS) \
		$(MOVED_PROTOCOL) --out RESULTS-3m.md

## results-in-place: the table in place (docs/training.md, "The paper's table"),
## 1M samples a run after a learning-rate search, writes RESULTS-in-place.md (28 runs of
## about an hour of one core, all recorded in results/: it trains nothing new)
results-in-place: data
	$(RUN) dmn_results --data data --runs runs/results --jobs $(RESULTS_JOBS) \
		--out RESULTS-in-place.md

## lint: only the ament linters
lint: setup
	$(RUN) python -m pytest -m linter $(PYTEST_ARGS)

## clean: remove the venv and build products
clean:
	rm -rf $(VENV) build install log *.egg-info
