"""Set up engine: the engine's own virtual environment, made for real; Python resolution."""
from __future__ import annotations

import shutil
import sys

import pytest

from .conftest import ROOT
from .helpers import detect_params

pytestmark = pytest.mark.qgis


def test_requirements_and_pins_are_pyproject_and_constraints():
    tomllib = pytest.importorskip("tomllib")  # Python 3.11+
    from hrmnet_qgis import engine_requirements
    from hrmnet_qgis.setup_engine import engine_requirements_and_pins

    deps = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    pins = [line.split("#")[0].strip() for line in (ROOT / "constraints.txt").read_text().splitlines()]
    reqs, cons = engine_requirements_and_pins()
    assert reqs == deps and cons == [p for p in pins if p]
    assert 'torch==2.13.0; python_version >= "3.10"' in cons and "numpy<2" in cons
    # Pythons without tomllib (QGIS on 3.9/3.10) read the same list.
    assert engine_requirements.dependencies_without_tomllib((ROOT / "pyproject.toml").read_text()) == deps
    assert engine_requirements.import_names(["pillow>=9", "dask[distributed]>=2024.8", "torch>=2.1"]) == [
        "PIL", "dask", "torch"]


def test_a_torch_wheel_in_find_links_is_pinned(tmp_path):
    from hrmnet_qgis.setup_engine import requirements_for

    for name in ("torch-2.13.0+cpu-cp311-cp311-manylinux_2_28_x86_64.whl",
                 "torch-2.9.1+cpu-cp311-cp311-manylinux_2_28_x86_64.whl",
                 "torch-2.14.0-cp312-cp312-manylinux_2_28_x86_64.whl"):
        (tmp_path / name).touch()
    reqs = requirements_for((3, 11), [str(tmp_path)])
    assert "torch==2.13.0+cpu" in reqs and "torch>=2.1" not in reqs
    assert "torch>=2.1" in requirements_for((3, 10), [str(tmp_path)])
    assert "dask[distributed]>=2024.8" in reqs
    assert "numpy<2" in reqs


def test_engine_python_order_and_messages(tmp_path):
    from hrmnet_qgis.engine_python import HOW_TO, EngineSetupError, resolve_python

    setting, env_python, qgis_python = (tmp_path / n for n in ("venv-python", "env-python", "qgis-python"))
    for p in (setting, env_python, qgis_python):
        p.touch()
    env = {"HRMNET_PYTHON": str(env_python)}
    yes = lambda python: True  # noqa: E731
    no = lambda python: False  # noqa: E731
    assert resolve_python(str(setting), env, [str(qgis_python)], yes) == str(setting)
    assert resolve_python("", env, [str(qgis_python)], yes) == str(env_python)
    assert resolve_python("", {}, [str(qgis_python)], yes) == str(qgis_python)
    with pytest.raises(EngineSetupError) as exc:
        resolve_python("", {}, [str(qgis_python)], no)
    assert str(exc.value) == HOW_TO and "Set up engine" in HOW_TO and "HRMNET_PYTHON" in HOW_TO
    with pytest.raises(EngineSetupError, match="does not exist"):
        resolve_python(str(tmp_path / "gone"), env, [], yes)


def test_no_engine_python_is_a_clear_processing_error(qgis_app, scenes, tmp_path, monkeypatch):
    import processing
    from qgis.core import QgsProcessingException

    from hrmnet_qgis import engine_python

    monkeypatch.delenv("HRMNET_PYTHON")
    monkeypatch.setattr(engine_python, "qgis_python_candidates", lambda: [])
    with pytest.raises(QgsProcessingException, match="Set up engine"):
        processing.run("hrmnet:detectchanges", detect_params(scenes[0], tmp_path / "m.safetensors", 0.5, tmp_path))


def test_cancelled_setup_removes_the_half_made_environment(tmp_path):
    from hrmnet_qgis.setup_engine import SetupCancelled, create_engine_env

    folder = tmp_path / "venv"
    lines: list[str] = []
    with pytest.raises(SetupCancelled):
        create_engine_env(folder, log=lines.append, is_cancelled=lambda: (folder / "pyvenv.cfg").exists(),
                          python=sys.executable)
    assert not folder.exists()
    assert any("Removed the incomplete environment" in line for line in lines)


@pytest.mark.slow
def test_setup_engine_for_real_then_detection_uses_it(qgis_app, scenes, model_path, threshold, tmp_path):
    """Creates the venv and pip-installs the engine's requirements (pip may use its cache and
    PIP_FIND_LINKS), stores it as the plugin setting, and runs detection with it."""
    import processing
    from qgis.core import QgsVectorLayer

    from hrmnet_qgis import settings
    from hrmnet_qgis.engine_python import engine_python
    from hrmnet_qgis.setup_engine import create_engine_env

    folder = tmp_path / "engine-venv"
    lines: list[str] = []
    fractions: list[float] = []
    try:
        python = create_engine_env(folder, log=lines.append, progress=fractions.append)
        assert python.is_file() and (folder / "pyvenv.cfg").is_file()
        assert not str(python).startswith(sys.base_prefix), "never QGIS's own Python"
        assert fractions[0] == 0.0 and fractions[-1] == 1.0 and fractions == sorted(fractions)
        assert any(line.startswith("hrmnet-engine ") for line in lines)

        settings.put(settings.ENGINE_PYTHON, str(python))
        assert engine_python() == str(python)
        out = tmp_path / "out"
        out.mkdir()
        result = processing.run("hrmnet:detectchanges", detect_params(scenes[2], model_path, threshold, out))
        assert QgsVectorLayer(result["OUTPUT_POLYGONS"], "c", "ogr").isValid()
    finally:
        settings.put(settings.ENGINE_PYTHON, "")
        shutil.rmtree(folder, ignore_errors=True)


def test_the_environment_is_made_with_qgis_own_python_version(tmp_path, monkeypatch):
    """QGIS's interpreter first; else a Python of QGIS's version on PATH, never another version."""
    if sys.platform.startswith("win"):
        pytest.skip("stand-in interpreters are shell scripts")
    from hrmnet_qgis import setup_engine

    from .test_torch_build import _script

    v = sys.version_info
    monkeypatch.setattr(setup_engine, "qgis_python_candidates", lambda: ["/qgis/bin/python3"])
    assert setup_engine.base_python() == "/qgis/bin/python3"
    monkeypatch.setattr(setup_engine, "qgis_python_candidates", lambda: [])
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    monkeypatch.setenv("PATH", str(bin_dir))
    _script(bin_dir / "python3", "echo 3 8\n")  # another version: not taken
    with pytest.raises(setup_engine.SetupError, match=f"no Python {v.major}.{v.minor} \\(QGIS's version\\)"):
        setup_engine.base_python()
    same = _script(bin_dir / f"python{v.major}.{v.minor}", f"echo {v.major} {v.minor}\n")
    assert setup_engine.base_python() == str(same)
