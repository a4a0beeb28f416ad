"""``make plugin``: assemble the deployable QGIS plugin folder and its ZIP.

Writes ``build/hrmnet_qgis/`` (the plugin sources, the ``engine`` package inside
them, ``metadata.txt`` and ``LICENSE`` from the top level, and ``pb_tool.cfg`` so that
``pb_tool deploy``/``zip`` can run there) and ``dist/hrmnet_qgis.zip`` (one top
folder ``hrmnet_qgis/``; no ``__pycache__``/``.pyc``, no demo data, no model weights but
the int8 demo model ``engine/demo/hrmnet_demo_int8.onnx`` (14.7 MB, the default model of an
installed plugin), at most 25 MB): the file QGIS installs with "Install from ZIP".

The engine's requirements and pins travel with it: ``engine_requirements.txt`` and
``engine_constraints.txt`` are generated from pyproject.toml's dependencies and
constraints.txt (by ``hrmnet_qgis/engine_requirements.py``, which "Set up engine" also
reads in the source tree), so the plugin installs exactly the project's set; likewise
``engine_light_requirements.txt`` from engine/light-requirements.txt (the light engine:
onnxruntime, no torch).

Usage: ``python tools/build_plugin.py [--build-dir DIR] [--dist-dir DIR]``.
Exit 1 with one line on stderr when metadata.txt lacks a required field or the ZIP
would be too large.
"""
from __future__ import annotations

import argparse
import configparser
import fnmatch
import importlib.util
import shutil
import sys
import zipfile
from pathlib import Path
from typing import Iterator, Optional, Sequence

ROOT = Path(__file__).resolve().parents[1]
PLUGIN = "hrmnet_qgis"
MAX_ZIP_BYTES = 25_000_000  # plugins.qgis.org's limit (decimal MB; tools/plugin_check.py)
#: Fields the official QGIS plugin repository requires in metadata.txt (plus ours).
REQUIRED_METADATA = ["name", "qgisMinimumVersion", "description", "about", "version", "author", "email",
                     "repository", "tracker", "hasProcessingProvider", "qgisMaximumVersion"]
#: Never shipped: byte code, editor/OS litter, weights, the demo's bundled data.
EXCLUDE = ["__pycache__", "*.pyc", "*.pyo", ".DS_Store", "*~", "*.swp", "*.safetensors", "*.pth", "*.pt",
           "*.ckpt", "*.onnx", ".pytest_cache"]
EXCLUDE_PATHS = ["engine/demo/data", "engine/demo/training"]
#: Shipped although EXCLUDE matches: the int8 demo model, the installed plugin's default (runs on either engine).
SHIPPED_MODELS = ["engine/demo/hrmnet_demo_int8.onnx"]
#: In the build folder for pb_tool, not in the ZIP.
BUILD_ONLY = ["pb_tool.cfg"]


class BuildError(Exception):
    """The plugin cannot be built; the message says why in one line."""


def check_metadata(path: Path) -> dict[str, str]:
    """The ``[general]`` fields of metadata.txt; raises :class:`BuildError` for a missing field."""
    parser = configparser.ConfigParser(interpolation=None)
    parser.optionxform = str  # keep camelCase keys
    try:
        parser.read_string(path.read_text(encoding="utf-8"))
        general = dict(parser["general"])
    except (OSError, configparser.Error, KeyError) as exc:
        raise BuildError(f"{path}: not a valid metadata.txt ({exc})") from exc
    missing = [k for k in REQUIRED_METADATA if not general.get(k, "").strip()]
    if missing:
        raise BuildError(f"{path}: missing required field(s): {', '.join(missing)}")
    return general


def _ignored(rel: str) -> bool:
    if rel in SHIPPED_MODELS:
        return False
    parts = rel.split("/")
    if any(fnmatch.fnmatch(p, pattern) for p in parts for pattern in EXCLUDE):
        return True
    return any(rel == p or rel.startswith(p + "/") for p in EXCLUDE_PATHS)


def _copy_tree(src: Path, dst: Path, prefix: str) -> None:
    for path in sorted(src.rglob("*")):
        rel = f"{prefix}/{path.relative_to(src).as_posix()}" if prefix else path.relative_to(src).as_posix()
        if _ignored(rel) or path.is_symlink():
            continue
        target = dst / path.relative_to(src)
        if path.is_dir():
            target.mkdir(parents=True, exist_ok=True)
        else:
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(path, target)


def _engine_requirements(root: Path):
    """``hrmnet_qgis/engine_requirements.py`` loaded on its own (standard library only)."""
    path = root / PLUGIN / "engine_requirements.py"
    spec = importlib.util.spec_from_file_location("_hrmnet_engine_requirements", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def write_requirements(out: Path, root: Path = ROOT) -> list[Path]:
    """Write the plugin's requirements and constraints files (from pyproject.toml, constraints.txt and
    engine/light-requirements.txt)."""
    try:
        reqs = _engine_requirements(root)
        files = reqs.render((root / "pyproject.toml").read_text(encoding="utf-8"),
                            (root / "constraints.txt").read_text(encoding="utf-8"),
                            (root / reqs.LIGHT_SOURCE).read_text(encoding="utf-8"))
    except (OSError, KeyError, ValueError) as exc:
        raise BuildError(f"{root}: cannot read the engine's requirements ({exc})") from exc
    written = []
    for name, text in files.items():
        (out / name).write_text(text, encoding="utf-8")
        written.append(out / name)
    return written


def stage(build_dir: Path, root: Path = ROOT) -> Path:
    """Assemble ``build_dir/hrmnet_qgis`` from a fresh copy; return it."""
    check_metadata(root / "metadata.txt")
    out = build_dir / PLUGIN
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    _copy_tree(root / PLUGIN, out, "")
    _copy_tree(root / "engine", out / "engine", "engine")
    for name in ("metadata.txt", "LICENSE", "pb_tool.cfg"):
        shutil.copy2(root / name, out / name)
    write_requirements(out, root)
    return out


def _zip_members(folder: Path) -> Iterator[tuple[Path, str]]:
    for path in sorted(folder.rglob("*")):
        rel = path.relative_to(folder).as_posix()
        if path.is_file() and not _ignored(rel) and rel not in BUILD_ONLY:
            yield path, f"{PLUGIN}/{rel}"


def make_zip(folder: Path, zip_path: Path) -> Path:
    """Write ``zip_path`` with ``folder``'s files under one top folder ``hrmnet_qgis/``."""
    zip_path.parent.mkdir(parents=True, exist_ok=True)
    tmp = zip_path.with_name(zip_path.name + ".part")
    with zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=9) as zf:
        for path, arcname in _zip_members(folder):
            info = zipfile.ZipInfo(arcname, date_time=(2020, 1, 1, 0, 0, 0))
            info.compress_type = zipfile.ZIP_DEFLATED
            info.external_attr = 0o644 << 16
            zf.writestr(info, path.read_bytes())
    size = tmp.stat().st_size
    if size > MAX_ZIP_BYTES:
        tmp.unlink()
        raise BuildError(f"{zip_path}: {size:,} bytes, over the {MAX_ZIP_BYTES:,}-byte limit")
    tmp.replace(zip_path)
    return zip_path


def build(build_dir: Path, dist_dir: Path, root: Path = ROOT) -> tuple[Path, Path]:
    """Stage the plugin folder and write the ZIP; returns (folder, zip)."""
    folder = stage(build_dir, root)
    return folder, make_zip(folder, dist_dir / f"{PLUGIN}.zip")


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--build-dir", type=Path, default=ROOT / "build", help="where build/hrmnet_qgis goes")
    parser.add_argument("--dist-dir", type=Path, default=ROOT / "dist", help="where hrmnet_qgis.zip goes")
    args = parser.parse_args(argv)
    try:
        folder, zip_path = build(args.build_dir, args.dist_dir)
    except BuildError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    with zipfile.ZipFile(zip_path) as zf:
        n = len(zf.namelist())
    print(f"plugin folder: {folder}\nplugin zip:    {zip_path} ({zip_path.stat().st_size / 2**20:.2f} MB, {n} files)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
