# hrmnet-qgis: `make demo` and `make test` are all a newcomer needs.
PY := .venv/bin/python
export QT_QPA_PLATFORM ?= offscreen

.PHONY: bootstrap test demo bench plugin clean screenshots locks

bootstrap:
	@bash tools/bootstrap.sh

# The plugin tests run QGIS in-process, and QGIS must not share a process with the
# engine's pyproj/pyogrio/rasterio (two PROJ/GDAL copies crash it at exit): two runs.
test: bootstrap
	$(PY) -m pytest -q tests --ignore=tests/plugin $(PYTEST_ARGS)
	$(PY) -m pytest -q tests/plugin $(PYTEST_ARGS)

demo: bootstrap
	$(PY) -m engine demo

bench: bootstrap
	$(PY) -m benchmarks

# The ZIP, then the checks plugins.qgis.org runs on an upload (validator, bandit, detect-secrets).
plugin: bootstrap
	$(PY) tools/build_plugin.py
	$(PY) tools/plugin_check.py dist/hrmnet_qgis.zip

# engine/locks/light.txt and full.txt: every package of the light and full engine, pinned with
# hashes, from pyproject.toml + engine/light-requirements.txt + constraints.txt (uv, PyPI).
locks: bootstrap
	$(PY) tools/make_locks.py

# The real QGIS desktop under a virtual display (xvfb-run); pictures into docs/. Skipped
# with a message where there is no display server.
screenshots: bootstrap
	$(PY) tools/screenshots.py

clean:
	rm -rf build dist demo-output .pytest_cache
