"""The light engine in the plugin (onnxruntime, no torch): what "Set up engine › Detection only"
installs (a stand-in Python and nvidia-smi, no real install: tests/engine/onnx/test_light.py makes
.venv-light for real), the engine Python it accepts for .onnx models, the one-line message for a
torch model, .onnx metadata for the dialogs and the model file filters."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from .conftest import QGIS_PROCESS, ROOT, headless_env
from .test_torch_build import _script, fake_nvidia_smi, posix_only

pytestmark = pytest.mark.qgis

LIGHT_VENV_PYTHON = ROOT / ".venv-light" / "bin" / "python"
ONNX_DEMO = ROOT / "engine" / "demo" / "hrmnet_demo.onnx"
needs_light_venv = pytest.mark.skipif(not LIGHT_VENV_PYTHON.exists(),
                                      reason=".venv-light not made yet (tests/engine/onnx/test_light.py makes it)")


def _light_file_lines() -> list[str]:
    text = (ROOT / "engine" / "light-requirements.txt").read_text()
    return [s.split("#")[0].strip() for s in text.splitlines() if s.split("#")[0].strip()]


def test_light_requirements_are_light_requirements_txt_with_the_projects_pins():
    from hrmnet_qgis.setup_engine import engine_requirements_and_pins, light_requirements_and_pins

    reqs, pins = light_requirements_and_pins()
    assert reqs == _light_file_lines() and pins == engine_requirements_and_pins()[1]
    assert "onnxruntime>=1.18" in reqs and not any(r.startswith(("torch", "safetensors")) for r in reqs)


@posix_only
@pytest.mark.parametrize("driver, cuda, platform, build, package", [
    ("580.95.05", "13.0", "linux", "cuda", "onnxruntime-gpu[cuda,cudnn]"),
    ("590.44.01", "13.1", "win32", "cuda", "onnxruntime-gpu[cuda,cudnn]"),
    ("570.86.10", "12.8", "linux", "cpu", "onnxruntime"),            # PyPI's onnxruntime-gpu needs CUDA 13
    ("570.86.10", "12.8", "win32", "directml", "onnxruntime-directml"),
    (None, None, "linux", "cpu", "onnxruntime"),
    (None, None, "win32", "directml", "onnxruntime-directml"),
    ("580.95.05", "13.0", "darwin", "cpu", "onnxruntime"),           # macOS: nvidia-smi is not asked
])
def test_the_gpu_decides_the_onnxruntime_build(monkeypatch, tmp_path, driver, cuda, platform, build, package):
    from hrmnet_qgis.setup_engine import choose_onnxruntime, detect_gpu

    (tmp_path / "bin").mkdir()
    if driver:
        fake_nvidia_smi(tmp_path / "bin", driver, cuda)
    monkeypatch.setenv("PATH", str(tmp_path / "bin"))
    choice = choose_onnxruntime(*detect_gpu(platform=platform), platform=platform)
    assert (choice.build, choice.package) == (build, package)
    assert "GB" in choice.size
    if driver and build != "cuda" and platform != "darwin":
        assert "too old for PyPI's onnxruntime-gpu" in choice.reason and "newer NVIDIA driver" in choice.reason


LIGHT_PYTHON = """
log="$(dirname "$0")/../calls.log"
echo "$*" >> "$log"
case "$*" in
  "-c import sys"*) echo "3 11" ;;
  "-m pip install"*) echo "Successfully installed onnxruntime-gpu-1.31.1" ;;
  "-c import torch") exit 1 ;;
  "-c import onnxruntime, rasterio") exit 0 ;;
  "-c import"*) echo "onnxruntime 1.31.1 ['CUDAExecutionProvider', 'CPUExecutionProvider']" ;;
  "-m engine --version") echo "hrmnet-engine 0.1.0" ;;
  "-m engine doctor --json") echo '{REPORT}' ;;
esac
"""
LIGHT_REPORT = {"ok": True, "checks": [{"name": "torch", "ok": True, "value": "not installed (light engine: "
                                        "detection with .onnx models only)", "skipped": True}],
                "torch": None, "cuda": None, "engine_kind": "light", "device": "cuda", "precision": "fp32",
                "onnxruntime": "1.31.1", "providers": ["CUDAExecutionProvider", "CPUExecutionProvider"]}


def _stand_in_venv(folder: Path) -> Path:
    (folder / "bin").mkdir(parents=True)
    (folder / "pyvenv.cfg").write_text("home = /usr/bin\n")
    return _script(folder / "bin" / "python", LIGHT_PYTHON.replace("{REPORT}", json.dumps(LIGHT_REPORT)))


@posix_only
def test_light_setup_installs_the_light_set_with_onnxruntime_gpu_and_checks_it(tmp_path):
    """The whole light set-up with a stand-in interpreter: pip gets light-requirements.txt's set with
    onnxruntime-gpu, the project's pins and no PyTorch index; the check imports that set (no torch)."""
    from hrmnet_qgis import engine_requirements
    from hrmnet_qgis.setup_engine import LIGHT, choose_onnxruntime, create_engine_env
    from hrmnet_qgis.setup_engine import GpuInfo

    folder = tmp_path / "venv"
    _stand_in_venv(folder)
    build = choose_onnxruntime(GpuInfo("NVIDIA GeForce RTX 4070", "580.95.05", (13, 0)), platform="linux")
    lines: list[str] = []
    reports: list[dict] = []
    python = create_engine_env(folder, log=lines.append, kind=LIGHT, onnx_build=build, on_report=reports.append,
                               find_links=[])
    assert python == folder / "bin" / "python"
    calls = (folder / "calls.log").read_text().splitlines()
    locked, gpu = [c.split() for c in calls if c.startswith("-m pip install")]
    lock = [e for e in engine_requirements.load_lock(ROOT, "light") if e.name != "onnxruntime"]
    # the light lock with its hashes, less onnxruntime; then onnxruntime-gpu at the lock's version
    assert "--require-hashes" in locked and "--extra-index-url" not in locked + gpu
    assert Path(locked[locked.index("-r") + 1]).read_text() == engine_requirements.hashed(lock)
    assert gpu[-1] == "onnxruntime-gpu[cuda,cudnn]" and not any(a.startswith("torch") for a in gpu)
    gpu_pins = Path(gpu[gpu.index("-c") + 1]).read_text()
    assert "onnxruntime-gpu==1.32.0 ; python_full_version >= '3.11'" in gpu_pins.splitlines()
    assert "numpy==1.26.4" in gpu_pins.splitlines() and "torch" not in gpu_pins
    check = next(c for c in calls if c.startswith("-c import numpy"))
    assert "onnxruntime" in check and "rasterio" in check and "torch" not in check
    assert reports == [LIGHT_REPORT]
    assert any(line.startswith("onnxruntime: onnxruntime-gpu for NVIDIA GeForce RTX 4070") for line in lines)
    assert any("light engine's locked set (no torch)" in line and "1.5 GB" in line for line in lines)
    summary = next(line for line in lines if line.startswith("Engine check: "))
    assert summary == ("Engine check: light engine (no torch: .onnx models only), device cuda, onnxruntime 1.31.1 "
                       "(CUDAExecutionProvider, CPUExecutionProvider), precision fp32")


@posix_only
def test_light_setup_on_cpu_says_the_measured_size(tmp_path, monkeypatch):
    from hrmnet_qgis import engine_requirements
    from hrmnet_qgis.setup_engine import LIGHT, create_engine_env

    (tmp_path / "bin").mkdir()
    monkeypatch.setenv("PATH", str(tmp_path / "bin") + os.pathsep + "/usr/bin:/bin")  # no nvidia-smi
    folder = tmp_path / "venv"
    _stand_in_venv(folder)
    lines: list[str] = []
    create_engine_env(folder, log=lines.append, kind=LIGHT, find_links=[])
    pips = [c.split() for c in (folder / "calls.log").read_text().splitlines() if c.startswith("-m pip install")]
    assert len(pips) == 1 and "--require-hashes" in pips[0]  # the whole light lock, onnxruntime (CPU) included
    lock = Path(pips[0][pips[0].index("-r") + 1]).read_text()
    assert lock == engine_requirements.hashed(engine_requirements.load_lock(ROOT, "light"))
    assert "onnxruntime==" in lock and "torch" not in lock
    assert any("about 0.72 GB on disk, 0.18 GB to download (measured" in line for line in lines)


@posix_only
def test_engine_python_takes_a_light_engine_for_onnx_and_says_what_to_do_for_a_torch_model(tmp_path):
    from hrmnet_qgis.engine_python import EngineSetupError, HOW_TO, check_model, resolve_python, usable_for

    python = str(_stand_in_venv(tmp_path / "light"))
    # QGIS's own Python without torch but with onnxruntime: fine for an .onnx model, not for a checkpoint.
    assert resolve_python("", {}, [python], usable_for("m.onnx")) == python
    with pytest.raises(EngineSetupError) as exc:
        resolve_python("", {}, [python], usable_for("m.safetensors"))
    assert str(exc.value) == HOW_TO
    check_model(python, "m.onnx")
    check_model(python, "")
    for model in ("/data/best.safetensors", "/data/authors.pth"):
        with pytest.raises(EngineSetupError) as exc:
            check_model(python, model)
        message = str(exc.value)
        assert "\n" not in message and message.startswith(f"{model}: the engine is the light one")
        assert "python -m engine export " + model + " /data/" in message and ".onnx where torch" in message
        assert "set up the full engine" in message and "Detection and training" in message


def _qgis_process(built_plugin, python: Path, *args: str) -> subprocess.CompletedProcess:
    env = dict(headless_env(built_plugin), HRMNET_PYTHON=str(python))
    enabled = subprocess.run([QGIS_PROCESS, "plugins", "enable", "hrmnet_qgis"], env=env, capture_output=True,
                             text=True, timeout=300)
    assert enabled.returncode == 0, enabled.stdout + enabled.stderr
    return subprocess.run([QGIS_PROCESS, "run", *args], env=env, capture_output=True, text=True, timeout=300)


@needs_light_venv
def test_a_checkpoint_with_the_light_engine_is_one_line_in_the_qgis_log(built_plugin, scenes, model_path, tmp_path):
    run = _qgis_process(built_plugin, LIGHT_VENV_PYTHON, "hrmnet:detectchanges", "--",
                        f"BEFORE={scenes[0][0]}", f"AFTER={scenes[0][1]}", f"MODEL={model_path}",
                        f"OUTPUT_POLYGONS={tmp_path / 'out.gpkg'}")
    out = run.stdout + run.stderr
    assert run.returncode != 0
    assert out.count("the engine is the light one") == 1 and "set up the full engine" in out, out
    assert " -m engine detect" not in out and not (tmp_path / "out.gpkg").exists()


@needs_light_venv
def test_training_with_the_light_engine_is_one_line_before_running(built_plugin, tmp_path):
    """Training always needs torch: refused before the engine runs (the engine's own "needs torch"
    would reach qgis_process's log several times: console, error event, the exception)."""
    (tmp_path / "data").mkdir()
    run = _qgis_process(built_plugin, LIGHT_VENV_PYTHON, "hrmnet:train", "--", f"DATA={tmp_path / 'data'}",
                        "STEPS=1", "IMAGENET=false", f"OUTPUT={tmp_path / 'run'}")
    out = run.stdout + run.stderr
    assert run.returncode != 0
    assert out.count("train: needs torch") == 1 and "set up the full engine" in out, out
    assert " -m engine train" not in out and not (tmp_path / "run").exists()


def test_onnx_metadata_is_read_without_onnx_and_matches_the_engine(tmp_path):
    from hrmnet_qgis.model_info import model_summary, read_model_info

    info = read_model_info(str(ONNX_DEMO))
    engine = json.loads(subprocess.run([os.environ["HRMNET_PYTHON"], "-m", "engine", "info", str(ONNX_DEMO)],
                                       cwd=ROOT, capture_output=True, text=True, timeout=300, check=True).stdout)
    for key in ("tile_size", "overlap", "threshold", "gsd", "bands", "architecture", "scaling", "training"):
        assert info[key] == engine[key], key
    assert info["onnx_export"] == engine["onnx"]["export"]
    assert model_summary(info) == model_summary(read_model_info(str(ROOT / "engine" / "demo" /
                                                                    "hrmnet_demo.safetensors")))
    broken = tmp_path / "broken.onnx"
    broken.write_bytes(ONNX_DEMO.read_bytes()[:5000])
    assert read_model_info(str(broken)) is None and read_model_info(str(tmp_path / "gone.onnx")) is None


def test_the_demo_model_is_the_int8_one_else_what_the_engine_runs(qgis_app, tmp_path):
    """The int8 ONNX demo model (what the ZIP ships) for either engine; without it the ONNX
    export for a light engine and the checkpoint for a full one."""
    from hrmnet_qgis import settings
    from hrmnet_qgis.model_info import demo_model

    int8 = ROOT / "engine" / "demo" / "hrmnet_demo_int8.onnx"
    assert demo_model(ROOT, light=True) == demo_model(ROOT, light=False) == str(int8)
    demo = tmp_path / "engine" / "demo"
    demo.mkdir(parents=True)
    (tmp_path / "engine" / "__main__.py").write_text("")
    for name in ("hrmnet_demo.onnx", "hrmnet_demo.safetensors"):
        (demo / name).symlink_to(ROOT / "engine" / "demo" / name)
    assert demo_model(tmp_path, light=True) == str(demo / "hrmnet_demo.onnx")
    assert demo_model(tmp_path, light=False) == str(demo / "hrmnet_demo.safetensors")
    try:
        settings.put(settings.ENGINE_KIND, "light")
        assert demo_model(tmp_path) == str(demo / "hrmnet_demo.onnx")
    finally:
        settings.put(settings.ENGINE_KIND, "")
    assert demo_model(tmp_path) == str(demo / "hrmnet_demo.safetensors")


def test_model_file_filters_take_onnx(qgis_app):
    from qgis.core import QgsApplication

    for alg_id in ("hrmnet:detectchanges", "hrmnet:detectchangessheets", "hrmnet:evaluate"):
        alg = QgsApplication.processingRegistry().createAlgorithmById(alg_id)
        assert "*.onnx" in alg.parameterDefinition("MODEL").fileFilter(), alg_id


def test_dialog_offers_detection_only_with_its_measured_size(qgis_app, monkeypatch, tmp_path):
    from qgis.core import QgsApplication

    from hrmnet_qgis.dialogs import SetupEngineDialog
    from hrmnet_qgis.setup_engine import FULL, LIGHT, default_env_dir

    monkeypatch.setenv("PATH", str(tmp_path))  # no nvidia-smi
    dialog = SetupEngineDialog()
    labels = [dialog.kind.itemText(i) for i in range(dialog.kind.count())]
    assert labels == ["Detection only (light, ~0.72 GB measured: onnxruntime, no torch; .onnx models)",
                      "Detection and training (PyTorch, ~1.6 GB CPU / several GB CUDA)"]
    assert dialog.chosen_kind() == FULL and dialog.build.isEnabled() and not dialog.runtime.isEnabled()
    dialog.kind.setCurrentIndex(dialog.kind.findData(LIGHT))
    assert dialog.chosen_kind() == LIGHT and dialog.runtime.isEnabled() and not dialog.build.isEnabled()
    assert dialog.folder.filePath() == str(default_env_dir(QgsApplication.qgisSettingsDirPath(), LIGHT))
    assert dialog.runtime.itemText(0) == "Automatic: onnxruntime (CPU)" and dialog.chosen_runtime() is None
    note = dialog.build_note.text()
    assert "0.72 GB on disk, 0.18 GB to download (measured" in note and "Installs onnxruntime (no torch)" in note
    dialog.runtime.setCurrentIndex(2)
    assert dialog.chosen_runtime().package == "onnxruntime-gpu[cuda,cudnn]" and "1.5 GB" in dialog.build_note.text()
    dialog.close()
    assert sys.platform != "win32" or dialog.runtime.count() == 4


@needs_light_venv
def test_evaluate_needs_the_full_engine_even_for_an_onnx_model(qgis_app, monkeypatch, tmp_path):
    import processing
    from qgis.core import QgsProcessingException

    monkeypatch.setenv("HRMNET_PYTHON", str(LIGHT_VENV_PYTHON))
    (tmp_path / "data").mkdir()
    with pytest.raises(QgsProcessingException) as exc:
        processing.run("hrmnet:evaluate", {"DATA": str(tmp_path / "data"), "SPLIT": 0, "MODEL": str(ONNX_DEMO)})
    assert str(exc.value).count("evaluate: needs torch") == 1 and "set up the full engine" in str(exc.value)


def test_a_finished_light_setup_is_remembered_and_the_demo_default_follows(qgis_app, monkeypatch, tmp_path):
    from qgis.core import QgsApplication

    from hrmnet_qgis import settings
    from hrmnet_qgis.dialogs import SetupEngineDialog
    from hrmnet_qgis.setup_engine import LIGHT

    monkeypatch.setenv("PATH", str(tmp_path))  # no nvidia-smi
    python = _stand_in_venv(tmp_path / "light")
    dialog = SetupEngineDialog()
    try:
        dialog.task_kind = LIGHT
        dialog._on_ended("ok", str(python))  # what the finished set-up task reports
        assert settings.get(settings.ENGINE_KIND) == "light" and settings.get(settings.ENGINE_PYTHON) == str(python)
        # no torch to export with: the ONNX copy needs the full engine, and says so
        assert not dialog.export_button.isEnabled() and "Needs the full engine" in dialog.export_button.toolTip()
        alg = QgsApplication.processingRegistry().createAlgorithmById("hrmnet:detectchanges")
        # the int8 ONNX demo model: it runs on the light engine
        assert alg.parameterDefinition("MODEL").defaultValue() == str(ONNX_DEMO.with_name("hrmnet_demo_int8.onnx"))
    finally:
        settings.put(settings.ENGINE_KIND, "")
        settings.put(settings.ENGINE_PYTHON, "")
        dialog.close()
        QgsApplication.processingRegistry().providerById("hrmnet").refreshAlgorithms()
