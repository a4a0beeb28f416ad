"""The plugin ZIP passes what plugins.qgis.org checks before it accepts an upload
(tools/plugin_check.py: its validator's rules, bandit with no medium/high finding,
detect-secrets with nothing found), and the check refuses what the repository refuses."""
from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
METADATA = """[general]
name=Example
qgisMinimumVersion=3.22
description=An example.
about=An example plugin.
version=0.1
author=Someone
email=someone@example.org
tracker=https://example.org/issues
repository=https://example.org/code
"""


def _tool():
    spec = importlib.util.spec_from_file_location("plugin_check", ROOT / "tools" / "plugin_check.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _zip(path: Path, members: dict, top: str = "example") -> Path:
    """A plugin ZIP: the minimal valid plugin plus ``members`` (name -> bytes/str, or None to drop one)."""
    files = {"__init__.py": "def classFactory(iface):\n    return None\n", "metadata.txt": METADATA,
             "LICENSE": "GPL-2.0-or-later\n", **members}
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, data in files.items():
            if data is not None:
                info = zipfile.ZipInfo(f"{top}/{name}")
                info.external_attr = 0o644 << 16
                zf.writestr(info, data)
    return path


@pytest.fixture(scope="module")
def built(tmp_path_factory) -> Path:
    base = tmp_path_factory.mktemp("plugin-build")
    run = subprocess.run([sys.executable, str(ROOT / "tools" / "build_plugin.py"), "--build-dir", str(base / "build"),
                          "--dist-dir", str(base / "dist")], capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr
    return base / "dist" / "hrmnet_qgis.zip"


def test_the_built_plugin_passes_the_plugin_repository_checks(built):
    problems = _tool().check(built)
    assert problems == [], "plugins.qgis.org would refuse the ZIP:\n" + "\n".join(problems)


def test_a_valid_plugin_with_an_onnx_model_and_icons_passes(tmp_path):
    model = bytes(range(256)) * 64  # binary, like an ONNX protobuf
    ok = _zip(tmp_path / "ok.zip", {"models/model.onnx": model, "icons/icon.png": b"\x89PNG\r\n\x1a\n" + model})
    assert _tool().zip_problems(ok) == []


@pytest.mark.parametrize("members, top, fragment", [
    ({"x.pyc": b"\x00"}, "example", ".pyc file"),
    ({"__pycache__/x.cpython-311.pyc": b"\x00"}, "example", "__pycache__ folder"),
    ({".env": "A=1\n"}, "example", "hidden file"),
    ({"lib/fast.so": b"\x7fELF\x02\x01"}, "example", "executable or native library"),
    ({"data/blob.dat": b"\x7fELF\x02\x01rest"}, "example", "executable or native library"),
    ({"install.sh": "echo hi\n"}, "example", "executable or native library"),
    ({"weights.safetensors": b"\x00\x01\x02\xff"}, "example", "binary file"),
    ({"LICENSE": None}, "example", "LICENSE: missing"),
    ({"metadata.txt": METADATA.replace("tracker=https://example.org/issues\n", "")}, "example",
     "missing required field(s): tracker"),
    ({"metadata.txt": METADATA.replace("author=Someone", "author=A/B")}, "example", "author contains a slash"),
    ({}, "Example", "not lowercase PEP 8"),
])
def test_what_the_repository_refuses_is_reported(tmp_path, members, top, fragment):
    problems = _tool().zip_problems(_zip(tmp_path / "bad.zip", members, top))
    assert any(fragment in p for p in problems), problems


def test_a_zip_over_25_000_000_bytes_is_refused(tmp_path):
    big = tmp_path / "big.zip"
    with zipfile.ZipFile(big, "w", zipfile.ZIP_STORED) as zf:
        zf.writestr("example/__init__.py", "")
        zf.writestr("example/model.onnx", os.urandom(25_000_000))
    assert any("over the 25,000,000-byte limit" in p for p in _tool().zip_problems(big))


def test_bandit_detect_secrets_and_pragmas_are_enforced(tmp_path):
    tool = _tool()
    pkg = tmp_path / "example"
    pkg.mkdir()
    keyword = "pass" + "word"
    (pkg / "bad.py").write_text(
        "import hashlib\nimport pickle\n\n"
        "digest = hashlib.sha1(b'x').hexdigest()\n"
        "obj = pickle.loads(b'')  # nosec B301\n"
        f"{keyword} = 'k9#Tq2!vZx8@Lm4$'\n"
        "x = 1  # nosec\n", encoding="utf-8")
    bandit = tool.bandit_problems(tmp_path)
    assert any("bandit B324 high" in p for p in bandit), bandit
    assert any("bandit B301" in p for p in bandit), bandit  # mandatory: a nosec does not hide it
    assert any("detect-secrets Secret Keyword" in p for p in tool.secrets_problems(tmp_path))
    pragmas = tool.pragma_problems(tmp_path)
    assert any("bad.py:7: blanket '# nosec'" in p for p in pragmas), pragmas
    assert any("bad.py:5: pragma without its reason" in p for p in pragmas), pragmas


def test_command_line_lists_problems_and_fails(tmp_path):
    bad = _zip(tmp_path / "bad.zip", {"LICENSE": None})
    run = subprocess.run([sys.executable, str(ROOT / "tools" / "plugin_check.py"), str(bad)], capture_output=True,
                         text=True, timeout=300)
    assert run.returncode == 1 and "example/LICENSE: missing" in run.stdout.splitlines()
