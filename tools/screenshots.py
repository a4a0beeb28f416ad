"""``make screenshots``: pictures of the plugin in the real QGIS desktop, for the README.

Builds the plugin (``tools/build_plugin.py``) into a temporary folder, makes two small
synthetic scenes for the batch picture, then starts ``qgis`` under a virtual display
(``xvfb-run``) with a throwaway profile and ``--code tools/screenshots_qgis.py``, which
clicks through the plugin and writes the PNGs into ``docs/``:

- ``detect-dialog.png``, ``detect-log.png``: the detection dialog before and after a run
  on the bundled demo pair;
- ``result-on-map.png``: the result loaded with the shipped styles;
- ``batch-dialog.png``: the batch dialog after a run over two scenes;
- ``setup-engine-dialog.png``, ``training-dialog.png``, ``models-dialog.png``.

Skipped (exit 0, one line) where there is neither a display (``DISPLAY``) nor
``xvfb-run``. Usage: ``python tools/screenshots.py [--out docs] [--timeout 900]``.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
# bandit B404: runs the build script, the engine and QGIS with fixed argument lists
import subprocess  # nosec B404
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SCREEN = "1600x1000x24"
PICTURES = ["detect-dialog.png", "detect-log.png", "result-on-map.png", "batch-dialog.png",
            "setup-engine-dialog.png", "training-dialog.png", "models-dialog.png"]


def display_command() -> list[str] | None:
    """How to get a display: [] with one already (DISPLAY), xvfb-run otherwise, None without."""
    if os.environ.get("DISPLAY"):
        return []
    xvfb = shutil.which("xvfb-run")
    return [xvfb, "-a", "-s", f"-screen 0 {SCREEN}"] if xvfb else None


def run(argv: list, **kwargs) -> None:
    # bandit B603: fixed list argv, no shell
    subprocess.run(argv, check=True, **kwargs)  # nosec B603


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=str(ROOT / "docs"), help="folder for the PNGs (default: docs/)")
    parser.add_argument("--timeout", type=float, default=900, help="seconds QGIS may take in all")
    args = parser.parse_args(argv)

    prefix = display_command()
    qgis = shutil.which("qgis")
    if prefix is None or qgis is None:
        missing = "xvfb-run (apt-get install xvfb) or a display" if prefix is None else "the qgis desktop"
        print(f"screenshots skipped: no {missing} on this machine")
        return 0
    out = Path(args.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="hrmnet-screenshots-"))
    keep = False
    try:
        run([sys.executable, str(ROOT / "tools" / "build_plugin.py"), "--build-dir", str(work / "build"),
             "--dist-dir", str(work / "dist")], cwd=ROOT, capture_output=True)
        # The ZIP leaves the weights out; here the demo model goes where the plugin looks for it
        # (as the README tells users to do), so the dialog proposes it, labelled.
        demo = work / "build" / "hrmnet_qgis" / "engine" / "demo"
        shutil.copy2(ROOT / "engine" / "demo" / "hrmnet_demo.safetensors", demo / "hrmnet_demo.safetensors")
        run([sys.executable, "-m", "engine", "synth", "--out", str(work / "scenes"), "--scenes", "2", "--size", "256",
             "--progress", "none"], cwd=ROOT, capture_output=True)
        runtime = work / "xdg"
        runtime.mkdir(mode=0o700)
        env = dict(os.environ, QGIS_PLUGINPATH=str(work / "build"), XDG_RUNTIME_DIR=str(runtime),
                   HRMNET_PYTHON=os.environ.get("HRMNET_PYTHON") or sys.executable,
                   HRMNET_SHOTS=json.dumps({"out": str(out), "work": str(work), "root": str(ROOT)}))
        env.pop("QT_QPA_PLATFORM", None)  # the real desktop, on the (virtual) display
        for name in PICTURES:
            (out / name).unlink(missing_ok=True)
        command = prefix + [qgis, "--nologo", "--noversioncheck", "--profiles-path", str(work / "profiles"),
                            "--code", str(ROOT / "tools" / "screenshots_qgis.py")]
        with open(work / "qgis.log", "w") as log:
            # bandit B603: fixed list argv, no shell
            proc = subprocess.run(command, env=env, stdout=log, stderr=subprocess.STDOUT,  # nosec B603
                                  timeout=args.timeout, check=False)
        error = work / "error.txt"
        if proc.returncode != 0 or error.exists():
            print(error.read_text() if error.exists() else (work / "qgis.log").read_text()[-3000:], file=sys.stderr)
            print(f"screenshots failed (QGIS exit {proc.returncode}); its log and files are kept in {work}",
                  file=sys.stderr)
            keep = True
            return 1
        made = [name for name in PICTURES if (out / name).is_file()]
        print(f"wrote {len(made)} screenshots to {out}: {', '.join(made)}")
        return 0 if len(made) == len(PICTURES) else 1
    finally:
        if not keep:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
