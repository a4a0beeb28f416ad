# hrmnet-qgis: `make demo` and `make test` are all a newcomer needs.
PY := .venv/bin/python
export QT_QPA_PLATFORM ?= offscreen

.PHONY: bootstrap test demo bench plugin clean

bootstrap:
	@bash tools/bootstrap.sh

test: bootstrap
	$(PY) -m pytest -q $(PYTEST_ARGS)

demo: bootstrap
	$(PY) -m engine demo

bench: bootstrap
	$(PY) -m benchmarks

plugin: bootstrap
	$(PY) tools/build_plugin.py

clean:
	rm -rf build dist demo-output .pytest_cache
