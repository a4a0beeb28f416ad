"""The model catalogue: models by name, pinned by address and sha256, downloaded on demand.

A catalogue is a JSON document::

    {"models": [{"name": "...", "url": "...", "sha256": "...",            (required)
                 "format": "onnx"|"safetensors"|"pth", "size": BYTES, "gsd": M_PER_PX,
                 "bands": [...], "purpose": "...", "license": "...",
                 "metrics": {"f1": ..., "measured_on": "..."}}]}

``sha256`` is the file's hex digest, bare or as ``sha256:HEX`` (pip's and OCI's digest form;
the shipped catalogue uses it, as the plugin repository's secret scan takes a bare 64-digit
hex string in a JSON file for a secret). ``url`` is an http(s) address (downloaded into ``$HRMNET_CACHE/models``), or a file path /
``file:`` URL, relative to the catalogue's own location (used in place). ``format`` defaults
to the address's extension. One name may have several formats (e.g. the ``.onnx`` for the
light engine and the ``.safetensors`` for torch); a name is otherwise unique (a later
catalogue replaces an earlier entry of the same name and format).

Catalogues: the one shipped with the engine (:data:`SHIPPED`: the demo models, local), then
``$HRMNET_MODELS_URL`` (an http(s) address or a file path; an agency's own list). A remote
catalogue is kept in the cache and its copy used (with a warning) when offline.

Downloads reuse :func:`engine.hub.download` (progress, resume, one-line errors). A file whose
sha256 is not the catalogue's is refused in one line and nothing of it stays in the cache.
"""
from __future__ import annotations

import hashlib
import http.client
import json
import os
import re
import urllib.parse
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping, Optional, Sequence

from .checksum import file_sha256
from .errors import UserError
from .events import Events

__all__ = ["SHIPPED", "ENV_URL", "Entry", "parse_catalogue", "load_entries", "find", "cached_path", "available_path",
           "fetch_model", "resolve_model", "default_formats", "looks_like_path"]

#: The catalogue shipped with the engine.
SHIPPED = Path(__file__).resolve().parent / "catalogue.json"
#: Environment variable naming another catalogue (http(s) address or file path).
ENV_URL = "HRMNET_MODELS_URL"
EXTENSIONS = {"onnx": ".onnx", "safetensors": ".safetensors", "pth": ".pth"}
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")
_SHA256 = re.compile(r"^[0-9a-fA-F]{64}$")
#: The optional prefix of a catalogue's sha256 value (``sha256:HEX``, as in pip's ``--hash``).
DIGEST_PREFIX = "sha256:"


@dataclass(frozen=True)
class Entry:
    """One model of a catalogue.

    Attributes:
        name, url, sha256, format: as in the catalogue (``url`` made absolute).
        size: bytes, or None. details: the other fields (gsd, bands, purpose, license, metrics...).
        catalogue: where the entry came from (path or address).
    """

    name: str
    url: str
    sha256: str
    format: str
    size: Optional[int] = None
    details: dict = field(default_factory=dict)
    catalogue: str = ""

    @property
    def remote(self) -> bool:
        return self.url.lower().startswith(("http://", "https://"))

    def as_dict(self) -> dict:
        return {"name": self.name, "format": self.format, "url": self.url, "sha256": self.sha256, "size": self.size,
                **self.details, "catalogue": self.catalogue}


def _absolute(url: str, base: str) -> str:
    """``url`` resolved against the catalogue's location ``base`` (an address or a file path)."""
    if url.lower().startswith(("http://", "https://")):
        return url
    if url.lower().startswith("file:"):
        return urllib.request.url2pathname(urllib.parse.urlparse(url).path)
    if base.lower().startswith(("http://", "https://")):
        return urllib.parse.urljoin(base, url)
    path = Path(url).expanduser()
    return str(path if path.is_absolute() else Path(base).parent / path)


def _entry(raw, base: str, where: str) -> Entry:
    if not isinstance(raw, dict):
        raise UserError(f"{where}: not an object with name, url and sha256")
    missing = [k for k in ("name", "url", "sha256") if not isinstance(raw.get(k), str) or not raw[k].strip()]
    if missing:
        raise UserError(f"{where}: missing {', '.join(missing)} (name, url and sha256 are required)")
    name, url, sha = raw["name"].strip(), raw["url"].strip(), raw["sha256"].strip().lower()
    sha = sha[len(DIGEST_PREFIX):] if sha.startswith(DIGEST_PREFIX) else sha
    if not _NAME.match(name):
        raise UserError(f"{where}: name {name!r}: letters, digits, '.', '_' and '-' only")
    if not _SHA256.match(sha):
        raise UserError(f"{where} ({name}): sha256 must be 64 hexadecimal digits (optionally after 'sha256:')")
    suffix = Path(urllib.parse.urlparse(url).path).suffix.lower().lstrip(".")
    fmt = str(raw.get("format") or suffix)
    if fmt not in EXTENSIONS:
        raise UserError(f"{where} ({name}): format {fmt!r}: expected one of {', '.join(EXTENSIONS)}")
    size = raw.get("size")
    size = int(size) if isinstance(size, int) and not isinstance(size, bool) and size > 0 else None
    details = {k: v for k, v in raw.items() if k not in ("name", "url", "sha256", "format", "size")}
    return Entry(name, _absolute(url, base), sha, fmt, size, details, base)


def parse_catalogue(text: str, base: str) -> list[Entry]:
    """The entries of a catalogue document ``text`` read from ``base`` (for relative addresses).

    Raises:
        UserError: not JSON, no ``models`` list, or an entry without name/url/sha256 (one line).
    """
    try:
        doc = json.loads(text)
    except ValueError as exc:
        raise UserError(f"{base}: not a JSON model catalogue ({exc})") from exc
    models = doc.get("models") if isinstance(doc, dict) else None
    if not isinstance(models, list):
        raise UserError(f"{base}: not a model catalogue (expected {{\"models\": [...]}})")
    return [_entry(raw, base, f"{base}: models[{i}]") for i, raw in enumerate(models)]


def _cache_dir(environ: Optional[Mapping[str, str]]) -> Path:
    from .hub import cache_dir

    return cache_dir(environ)


def _remote_text(url: str, environ: Optional[Mapping[str, str]], events: Events, timeout: float) -> str:
    """A remote catalogue's text (its copy in the cache refreshed); offline, the cached copy with a warning."""
    copy = _cache_dir(environ) / "catalogues" / (hashlib.sha256(url.encode("utf-8")).hexdigest()[:16] + ".json")
    request = urllib.request.Request(url, headers={"User-Agent": "hrmnet-engine"})
    try:
        # bandit B310: the address is the user's HRMNET_MODELS_URL, http(s) checked by the caller
        with urllib.request.urlopen(request, timeout=timeout) as response:  # nosec B310
            text = response.read().decode("utf-8")
    except (OSError, ValueError, http.client.HTTPException) as exc:
        why = getattr(exc, "reason", None) or exc
        if copy.is_file():
            events.warn(f"{url}: cannot read the model catalogue ({why}); using the copy of {copy}")
            return copy.read_text(encoding="utf-8")
        raise UserError(f"{url}: cannot read the model catalogue ({why})") from exc
    copy.parent.mkdir(parents=True, exist_ok=True)
    tmp = copy.with_name(copy.name + f".tmp{os.getpid()}")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, copy)
    return text


def _extra(environ: Mapping[str, str], events: Events, timeout: float) -> list[Entry]:
    where = environ.get(ENV_URL, "").strip()
    if not where:
        return []
    if where.lower().startswith(("http://", "https://")):
        return parse_catalogue(_remote_text(where, environ, events, timeout), where)
    path = Path(_absolute(where, str(Path.cwd() / "x")))
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise UserError(f"{ENV_URL}={where}: cannot read the model catalogue ({exc.strerror or exc})") from exc
    return parse_catalogue(text, str(path))


def load_entries(environ: Optional[Mapping[str, str]] = None, events: Optional[Events] = None,
                 timeout: float = 15.0, strict: bool = True) -> list[Entry]:
    """Every catalogue's entries: the shipped one, then ``$HRMNET_MODELS_URL``'s (which replaces
    entries of the same name and format). ``strict=False``: an unreadable extra catalogue is a
    warning, not an error (the shipped models stay usable)."""
    env = os.environ if environ is None else environ
    events = events or Events()
    entries = parse_catalogue(SHIPPED.read_text(encoding="utf-8"), str(SHIPPED)) if SHIPPED.is_file() else []
    try:
        extra = _extra(env, events, timeout)
    except UserError as exc:
        if strict:
            raise
        events.warn(str(exc))
        extra = []
    keys = {(e.name, e.format) for e in extra}
    return [e for e in entries if (e.name, e.format) not in keys] + extra


def default_formats() -> tuple[str, ...]:
    """The formats this engine runs, best first: without torch (the light engine) only ``onnx``."""
    import importlib.util

    if importlib.util.find_spec("torch") is None:
        return ("onnx",)
    return ("safetensors", "onnx", "pth")


def find(name: str, entries: Sequence[Entry], formats: Optional[Sequence[str]] = None) -> Entry:
    """The entry called ``name`` in the first of ``formats`` it has (default :func:`default_formats`).

    Raises:
        UserError: no such name, or not in a usable format.
    """
    formats = tuple(formats or default_formats())
    named = [e for e in entries if e.name == name]
    if not named:
        known = ", ".join(sorted({e.name for e in entries})) or "none"
        raise UserError(f"{name}: not a model file nor a catalogue model (catalogue: {known}; "
                        "python -m engine models list)")
    for fmt in formats:
        for e in named:
            if e.format == fmt:
                return e
    have = ", ".join(sorted({e.format for e in named}))
    raise UserError(f"{name}: the catalogue has it as {have}; this needs {' or '.join(formats)}"
                    + (" (the light engine runs .onnx only)" if formats == ("onnx",) else ""))


def cached_path(entry: Entry, environ: Optional[Mapping[str, str]] = None) -> Path:
    """Where a remote entry is kept: ``$HRMNET_CACHE/models/NAME.EXT``; a local entry's own file."""
    if not entry.remote:
        return Path(entry.url)
    return _cache_dir(environ) / "models" / f"{entry.name}{EXTENSIONS[entry.format]}"



def available_path(entry: Entry, environ: Optional[Mapping[str, str]] = None) -> Optional[Path]:
    """The entry's file when it is here (downloaded or local) and has the catalogue's sha256, else None."""
    path = cached_path(entry, environ)
    if path.is_file() and (entry.size is None or path.stat().st_size == entry.size) and file_sha256(path) == entry.sha256:
        return path
    return None


def _rejected(entry: Entry, got: str) -> str:
    return f"sha256 {got[:12]}… differs from the catalogue's {entry.sha256[:12]}… ({entry.catalogue})"


def fetch_model(entry: Entry, events: Optional[Events] = None, environ: Optional[Mapping[str, str]] = None,
                timeout: float = 30.0) -> Path:
    """The entry's verified file, downloaded first when it is remote and not cached yet.

    Raises:
        UserError: a local file missing or not matching its sha256; offline (the message says
            where to put the file by hand); an HTTP error; a download whose sha256 is not the
            catalogue's (removed: nothing of it stays in the cache).
    """
    from .hub import download

    events = events or Events()
    target = cached_path(entry, environ)
    if not entry.remote:
        if not target.is_file():
            raise UserError(f"{entry.name}: {target} is not in this installation")
        got = file_sha256(target)
        if got != entry.sha256:
            raise UserError(f"{entry.name}: {target}: refused: {_rejected(entry, got)}")
        return target
    if available_path(entry, environ) is not None:
        return target
    if target.is_file():
        events.warn(f"{target}: not the catalogue's file; downloading it again")
        target.unlink()
    part = target.with_name(target.name + ".part")
    size = f" ({entry.size / 1e6:.1f} MB)" if entry.size else ""
    events.log(f"downloading model {entry.name}{size} from {entry.url} to {target}")
    try:
        download(entry.url, part, events, timeout=timeout, stage=f"model {entry.name}")
    except UserError as exc:
        if "cannot connect" in str(exc):
            raise UserError(f"{exc}; without a connection, download it elsewhere and put it at {target} "
                            "(or give --model FILE)") from exc
        raise
    got = file_sha256(part)
    if got != entry.sha256:
        part.unlink()
        raise UserError(f"{entry.url}: downloaded file refused: {_rejected(entry, got)}; removed it")
    os.replace(part, target)
    events.log(f"model {entry.name} verified and cached: {target}")
    return target


def looks_like_path(value: str) -> bool:
    """Whether ``--model VALUE`` is meant as a file (it exists, has a folder or a model extension)
    rather than a catalogue name."""
    text = str(value)
    return (os.path.exists(text) or "/" in text or "\\" in text
            or Path(text).suffix.lower() in (*EXTENSIONS.values(), ".pt", ".ckpt"))


def resolve_model(value: Optional[str], events: Optional[Events] = None, formats: Optional[Sequence[str]] = None,
                  environ: Optional[Mapping[str, str]] = None) -> Optional[str]:
    """``--model VALUE`` as a file path: a path is returned unchanged (no catalogue is read); a
    catalogue name becomes its verified file (downloaded first when needed), in the first of
    ``formats`` the catalogue has (default :func:`default_formats`: the light engine takes ``.onnx``)."""
    if value is None or looks_like_path(value):
        return value
    events = events or Events()
    entry = find(str(value), load_entries(environ, events, strict=False), formats)
    path = fetch_model(entry, events, environ)
    events.log(f"model {entry.name} ({entry.format}): {path}")
    return str(path)
