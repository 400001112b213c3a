# dlbox: the two commands of the Quick start are `make quickstart` and `make test`.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
PRESET ?= tensorflow-2.9

.PHONY: quickstart test unit bench engine venv clean

## venv: a virtual environment with dlbox and its test tools
venv: $(BIN)/.installed
$(BIN)/.installed: pyproject.toml
	scripts/host-setup.sh packages
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[test]'
	$(BIN)/python -m compileall -q src  # caches the CLI reads even where PYTHONDONTWRITEBYTECODE is set
	touch $@

## engine: make sure a Docker Engine answers (installs and starts one if needed)
engine: venv
	scripts/host-setup.sh engine

## quickstart: set everything up, build the TensorFlow 2.9 image, train a model in it, open a workspace
quickstart: venv engine
	$(BIN)/dlbox build --preset $(PRESET)
	$(BIN)/dlbox verify dlbox/$(PRESET):latest
	@# made anew each time, so it mounts this checkout's examples; its /workspace volume is kept
	@$(BIN)/dlbox rm quickstart >/dev/null 2>&1 || true
	$(BIN)/dlbox up quickstart --preset $(PRESET) --mount "$(CURDIR)/examples:/workspace/examples:ro"
	$(BIN)/dlbox exec quickstart -- python /workspace/examples/check_tf.py
	@# the job gets examples/digits as a code snapshot, read-only at its working directory
	@id=$$($(BIN)/dlbox run --preset $(PRESET) --code examples/digits --param epochs=10 \
	    --json -- python train.py | $(BIN)/python -c 'import json, sys; print(json.load(sys.stdin)["id"])') && \
	  echo "> training examples/digits as job $$id" && $(BIN)/dlbox logs -f $$id && $(BIN)/dlbox wait $$id && \
	  $(BIN)/dlbox runs show $$id
	@echo "Quick start done. Jupyter: $$($(BIN)/dlbox open quickstart)"

## test: the whole suite, engine tests included
test: venv engine
	$(BIN)/python -m pytest -q -ra

## unit: the tests that need no engine
unit: venv
	$(BIN)/python -m pytest -q -m "not engine"

## bench: benchmarks, printed as a table of ratios against plain Docker
bench: venv engine
	$(BIN)/python benchmarks/run.py

clean:
	rm -rf $(VENV) build *.egg-info
