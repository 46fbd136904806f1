# Two commands set everything up on a fresh clone:
#   make demo   - build the demo lake end to end (ingest, SQL, train, predict, lineage)
#   make test   - run the test suite (what CI runs)
# Each creates the virtualenv .venv on first use.

VENV ?= .venv
PY := $(VENV)/bin/python
PYTEST_ARGS ?=

$(VENV)/.installed: pyproject.toml
	python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	# torch first, pinned to the CPU wheel: any other release pulls a multi-GB CUDA build.
	# The ml extra accepts any torch >= 2.2, so the editable install below keeps this one.
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -e ".[test,bench,ml]"
	touch $@

.PHONY: install demo test bench notebooks clean
install: $(VENV)/.installed

demo: $(VENV)/.installed
	$(VENV)/bin/matlake demo demo-lake --force

test: $(VENV)/.installed
	$(PY) -m pytest -n 2 --durations=15 $(PYTEST_ARGS)

bench: $(VENV)/.installed
	$(PY) bench/bench_ingest.py
	$(PY) bench/bench_query.py
	$(PY) bench/bench_eis.py
	$(PY) bench/bench_eis_speed.py

# re-execute the notebooks in place, so that they are committed with their outputs and plots
notebooks: $(VENV)/.installed
	for nb in notebooks/*.ipynb; do \
	  $(PY) -c 'import sys, nbformat, nbclient; p = sys.argv[1]; nb = nbformat.read(p, 4); nbclient.NotebookClient(nb, kernel_name="python3", timeout=600, resources={"metadata": {"path": "notebooks"}}).execute(); nbformat.write(nb, p)' $$nb || exit 1; \
	done

clean:
	rm -rf $(VENV) demo-lake .pytest_cache
