"""Check a plugin ZIP the way plugins.qgis.org checks an upload, before we upload it.

Mirrors the plugin repository (qgis/QGIS-Django ``plugins/validator.py`` and the QGIS Plugins
Website's ``plugins/security_scanner.py``), plus the project's own stricter rules:

- the ZIP: at most 25,000,000 bytes; no ``..`` or absolute member names; nothing named ``.pyc``
  and no ``__pycache__``/``.git``/``__MACOSX`` folder; a sound archive; one top-level folder,
  lowercase PEP 8 (``^[a-z_][a-z0-9_]*$``, required of new plugins); ``__init__.py``,
  ``metadata.txt`` with the required fields, ``LICENSE``; an author without slashes;
  http(s) tracker/repository/homepage links;
- no hidden file, no executable or native library (``.exe .dll .so .dylib .bat .sh .ps1
  .cmd``, or an ELF/PE/Mach-O header under any name), no ``.py`` with an execute bit, and no
  other non-text file than :data:`DATA_SUFFIXES` (icons and the ONNX model: a model is data,
  and the repository does not reject it);
- ``bandit -r`` over the extracted plugin: no medium or high finding (the repository's ``-ll``);
  B301 (pickle), B602 (shell=True) and B615 (unpinned Hugging Face download) are mandatory:
  a ``# nosec`` does not hide them here (bandit runs them again with ``--ignore-nosec``);
- ``detect-secrets scan --all-files`` (run in the extracted folder, metadata.txt excluded, as
  the repository runs it): nothing found;
- every ``# nosec`` names its test ids and every ``pragma: allowlist secret`` line has its
  reason in a comment on the line above (a reviewed line, never a blanket pragma).

Usage: ``python tools/plugin_check.py dist/hrmnet_qgis.zip``: one line per problem on stdout,
exit 1 when there is any. ``make plugin`` runs it; tests/test_plugin_repository.py too.
"""
from __future__ import annotations

import configparser
import json
import re
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path
from typing import Iterator, Optional, Sequence
from urllib.parse import urlparse

MAX_BYTES = 25_000_000  # the repository's PLUGIN_MAX_UPLOAD_SIZE (decimal megabytes)
REQUIRED_METADATA = ("name", "description", "version", "qgisMinimumVersion", "author", "email", "about",
                     "tracker", "repository")
FORBIDDEN_DIRS = ("__MACOSX", ".git", "__pycache__")
EXECUTABLE_SUFFIXES = (".exe", ".dll", ".so", ".dylib", ".bat", ".sh", ".ps1", ".cmd")
#: Non-text files shipped on purpose: icons, and the ONNX model (a protobuf, not code).
DATA_SUFFIXES = (".png", ".svg", ".ico", ".onnx")
#: Headers of native executables and libraries (ELF, PE, Mach-O thin/fat).
NATIVE_MAGIC = (b"\x7fELF", b"MZ", b"\xfe\xed\xfa\xce", b"\xfe\xed\xfa\xcf", b"\xce\xfa\xed\xfe",
                b"\xcf\xfa\xed\xfe", b"\xca\xfe\xba\xbe")
MANDATORY_BANDIT = ("B301", "B602", "B615")
_TOP = re.compile(r"^[a-z_][a-z0-9_]*$")


def _is_text(data: bytes) -> bool:
    if b"\x00" in data:
        return False
    try:
        data.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


def _member_problems(info: zipfile.ZipInfo, data: bytes) -> Iterator[str]:
    name = info.filename
    parts = name.rstrip("/").split("/")
    if ".." in name or name.startswith("/"):
        yield f"{name}: path information in a member name"
    if ".pyc" in name:
        yield f"{name}: .pyc file"
    for folder in FORBIDDEN_DIRS:
        if folder in parts:
            yield f"{name}: {folder} folder"
    if name.endswith("/"):
        return
    base = parts[-1]
    if base.startswith(".") and base not in (".gitignore", ".gitattributes"):
        yield f"{name}: hidden file"
    if name.lower().endswith(EXECUTABLE_SUFFIXES) or data.startswith(NATIVE_MAGIC):
        yield f"{name}: executable or native library"
    elif not _is_text(data) and not name.lower().endswith(DATA_SUFFIXES):
        yield f"{name}: binary file (allowed: {' '.join(DATA_SUFFIXES)})"
    if name.endswith(".py") and (info.external_attr >> 16) & 0o111:
        yield f"{name}: Python file with an execute permission"


def _metadata_problems(zf: zipfile.ZipFile, top: str) -> Iterator[str]:
    names = set(zf.namelist())
    for required in ("__init__.py", "metadata.txt", "LICENSE"):
        if f"{top}/{required}" not in names:
            yield f"{top}/{required}: missing"
    if f"{top}/metadata.txt" not in names:
        return
    parser = configparser.ConfigParser(interpolation=None)
    parser.optionxform = str
    try:
        parser.read_string(zf.read(f"{top}/metadata.txt").decode("utf-8"))
        meta = dict(parser["general"])
    except (UnicodeDecodeError, configparser.Error, KeyError) as exc:
        yield f"{top}/metadata.txt: not readable as [general] metadata ({exc})"
        return
    missing = [k for k in REQUIRED_METADATA if not meta.get(k, "").strip()]
    if missing:
        yield f"{top}/metadata.txt: missing required field(s): {', '.join(missing)}"
    if "/" in meta.get("author", ""):
        yield f"{top}/metadata.txt: author contains a slash"
    for key in ("tracker", "repository", "homepage"):
        url = urlparse(meta.get(key, "https://x").strip())
        if url.scheme not in ("http", "https") or not url.netloc:
            yield f"{top}/metadata.txt: {key} is not a web link"


def zip_problems(zip_path: Path) -> list[str]:
    """What the repository's validator (and our file rules) would refuse in ``zip_path``."""
    size = zip_path.stat().st_size
    problems = [f"{zip_path}: {size:,} bytes, over the {MAX_BYTES:,}-byte limit"] if size > MAX_BYTES else []
    try:
        zf = zipfile.ZipFile(zip_path)
    except zipfile.BadZipFile as exc:
        return problems + [f"{zip_path}: not a ZIP ({exc})"]
    with zf:
        bad = zf.testzip()
        if bad:
            problems.append(f"{zip_path}: bad member {bad} (CRC)")
        for info in zf.infolist():
            problems.extend(_member_problems(info, zf.read(info) if not info.is_dir() else b""))
        tops = sorted({n.split("/")[0] for n in zf.namelist()})
        if len(tops) != 1 or not zf.namelist()[0].count("/"):
            problems.append(f"{zip_path}: needs exactly one top-level folder (found {', '.join(tops)})")
        elif not _TOP.match(tops[0]):
            problems.append(f"{zip_path}: top-level folder {tops[0]!r} is not lowercase PEP 8 ([a-z_][a-z0-9_]*)")
        if tops:
            problems.extend(_metadata_problems(zf, tops[0]))
    return problems


def _bandit(folder: Path, *args: str) -> list[dict]:
    run = subprocess.run([sys.executable, "-m", "bandit", "-r", str(folder), "-f", "json", "-q", *args],
                         capture_output=True, text=True, timeout=600)
    if run.returncode not in (0, 1) or not run.stdout.strip():
        raise RuntimeError(f"bandit failed: {run.stderr.strip()[-500:]}")
    return json.loads(run.stdout)["results"]


def bandit_problems(folder: Path) -> list[str]:
    """Medium/high bandit findings, and any finding of the mandatory tests even under ``# nosec``."""
    found = _bandit(folder, "-ll") + _bandit(folder, "-t", ",".join(MANDATORY_BANDIT), "--ignore-nosec")
    lines = {f"{Path(r['filename']).relative_to(folder)}:{r['line_number']}: bandit {r['test_id']} "
             f"{r['issue_severity'].lower()}: {r['issue_text']}" for r in found}
    return sorted(lines)


def secrets_problems(folder: Path) -> list[str]:
    """detect-secrets as the repository runs it (in the folder, ``--all-files``, metadata.txt excluded)."""
    run = subprocess.run([sys.executable, "-m", "detect_secrets", "scan", "--all-files", "--exclude-files",
                          r"metadata\.txt", "."], cwd=folder, capture_output=True, text=True, timeout=600)
    if run.returncode != 0 or not run.stdout.strip():
        raise RuntimeError(f"detect-secrets failed: {run.stderr.strip()[-500:]}")
    results = json.loads(run.stdout)["results"]
    return [f"{name}:{s['line_number']}: detect-secrets {s['type']}" for name, found in sorted(results.items())
            for s in found]


def pragma_problems(folder: Path) -> list[str]:
    """Blanket ``# nosec`` and allowlist pragmas without a reason on the line above."""
    problems = []
    for path in sorted(folder.rglob("*.py")):
        lines = path.read_text(encoding="utf-8").splitlines()
        for i, line in enumerate(lines):
            rel = f"{path.relative_to(folder)}:{i + 1}"
            nosec = re.search(r"#\s*nosec\b(.*)", line)
            if nosec and not re.match(r"\s*:?\s*B\d{3}", nosec.group(1)):
                problems.append(f"{rel}: blanket '# nosec' (name the test ids, e.g. '# nosec B603')")
            if (nosec or "pragma: allowlist secret" in line) and not (i and lines[i - 1].strip().startswith("#")):
                problems.append(f"{rel}: pragma without its reason in a comment on the line above")
    return problems


def check(zip_path: Path) -> list[str]:
    """Every problem the plugin repository (and this project) would find in ``zip_path``."""
    problems = zip_problems(zip_path)
    with tempfile.TemporaryDirectory(prefix="plugin-check-") as tmp:
        with zipfile.ZipFile(zip_path) as zf:
            zf.extractall(tmp)
        folder = Path(tmp)
        problems += bandit_problems(folder) + secrets_problems(folder) + pragma_problems(folder)
    return problems


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if len(args) != 1:
        print("usage: python tools/plugin_check.py PLUGIN.zip", file=sys.stderr)
        return 2
    problems = check(Path(args[0]))
    for problem in problems:
        print(problem)
    if not problems:
        print(f"{args[0]}: passes the plugin repository's checks")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
