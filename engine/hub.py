"""Published weights fetched on demand: timm's ImageNet ``resnet18d`` for ``train --backbone imagenet``.

The authors start every run from ImageNet-pretrained ``resnet18d`` (timm,
``pretrained=True``). :func:`imagenet_backbone` downloads timm's published file
(``timm/resnet18d.ra2_in1k``, ``model.safetensors``, 46.9 MB) once into the cache
folder and returns its path:

- cache: ``$HRMNET_CACHE``, else the platform's user cache folder + ``hrmnet``
  (``%LOCALAPPDATA%\\hrmnet\\cache``, ``~/Library/Caches/hrmnet``, ``$XDG_CACHE_HOME/hrmnet``
  or ``~/.cache/hrmnet``);
- address: :data:`IMAGENET_URL`, or ``$HRMNET_BACKBONE_URL`` (an internal mirror);
- progress: ``progress`` events in bytes (a tqdm bar on the CLI, JSON lines for the plugin);
- resume: an interrupted download stays as ``NAME.part`` and continues with an HTTP
  ``Range`` request (also automatically, a few times, when the connection drops);
- integrity: the byte count the server announced, the pinned sha256 of timm's file
  (:data:`IMAGENET_SHA256`; ``$HRMNET_BACKBONE_SHA256`` replaces it for a mirror that
  serves a converted file), then keys and shapes through the backbone loader. A file that
  fails is removed; only a verified file ever gets the final name.

Offline, the error is one line that says where to put the file by hand.
Plain ``urllib``: no extra dependency.
"""
from __future__ import annotations

import http.client
import os
import socket
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Callable, Mapping, Optional

from .checksum import file_sha256
from .errors import UserError
from .events import Events

__all__ = ["IMAGENET_URL", "IMAGENET_SHA256", "IMAGENET_FILE", "cache_dir", "imagenet_backbone", "download"]

#: timm's ImageNet-1k resnet18d weights (the authors' ``timm.create_model("resnet18d", pretrained=True)``).
IMAGENET_URL = "https://huggingface.co/timm/resnet18d.ra2_in1k/resolve/main/model.safetensors"
#: sha256 of that file as the Hugging Face hub publishes it (Git LFS object of commit 591cf01, "Add model").
#: A public checksum of a public file, not a secret: detect-secrets (the plugin repository's scan) sees a
#: long hex string; this one line is allowlisted for that reason (reviewed; tests/test_plugin_repository.py).
IMAGENET_SHA256 = "0ad5d924c4269ad863590b6ccdd19f5fb48d0bae695c1dd6751de0b0282d8361"  # pragma: allowlist secret
#: Name in the cache folder.
IMAGENET_FILE = "resnet18d.ra2_in1k.safetensors"
#: Attempts per download (the first, then resumes after a dropped connection).
ATTEMPTS = 4
CHUNK = 1 << 16


def cache_dir(environ: Optional[Mapping[str, str]] = None, platform: str = sys.platform) -> Path:
    """The engine's download cache: ``$HRMNET_CACHE``, else the platform's user cache folder."""
    env = os.environ if environ is None else environ
    if env.get("HRMNET_CACHE"):
        return Path(env["HRMNET_CACHE"]).expanduser()
    home = Path(env.get("HOME") or Path.home())
    if platform.startswith("win"):
        base = env.get("LOCALAPPDATA") or str(home / "AppData" / "Local")
        return Path(base) / "hrmnet" / "cache"
    if platform == "darwin":
        return home / "Library" / "Caches" / "hrmnet"
    return Path(env.get("XDG_CACHE_HOME") or home / ".cache") / "hrmnet"



class _Dropped(Exception):
    """The connection ended before the announced size; the part file keeps what arrived."""


def _open(url: str, start: int, timeout: float):
    request = urllib.request.Request(url, headers={"User-Agent": "hrmnet-engine", "Accept-Encoding": "identity"})
    if start:
        request.add_header("Range", f"bytes={start}-")
    # bandit B310: the address is ours or the user's HRMNET_BACKBONE_URL (http/https checked by the caller)
    return urllib.request.urlopen(request, timeout=timeout)  # nosec B310


def _attempt(url: str, part: Path, timeout: float, report: Callable[[int, Optional[int]], None]) -> None:
    """One request: continue ``part`` from its size (or restart when the server ignores Range)."""
    start = part.stat().st_size if part.exists() else 0
    try:
        response = _open(url, start, timeout)
    except urllib.error.HTTPError as exc:
        if exc.code == 416 and start:  # nothing left to send: the part is complete or stale; verify decides
            exc.close()
            return
        raise
    with response:
        resumed = start and response.status == 206
        if not resumed:
            start = 0
        length = response.headers.get("Content-Length")
        total = start + int(length) if length and length.isdigit() else None
        done = start
        report(done, total)
        with open(part, "ab" if resumed else "wb") as f:
            while True:
                try:
                    block = response.read(CHUNK)
                except (OSError, socket.timeout, http.client.HTTPException) as exc:  # reset, timeout, IncompleteRead
                    raise _Dropped(f"connection dropped after {done} of {total or '?'} bytes ({exc})") from exc
                if not block:
                    break
                f.write(block)
                done += len(block)
                report(done, total)
        if total is not None and done < total:
            raise _Dropped(f"connection dropped after {done} of {total} bytes")


def download(url: str, part: Path, events: Optional[Events] = None, timeout: float = 30.0,
             attempts: int = ATTEMPTS, stage: str = "download") -> Path:
    """Download ``url`` into ``part`` (resuming what is there); returns ``part``.

    Raises:
        UserError: no connection, an HTTP error, or the connection dropped ``attempts``
            times (the part file is kept: the next call resumes it).
    """
    if not url.lower().startswith(("https://", "http://")):
        raise UserError(f"{url}: not an http(s) address")
    events = events or Events()
    last = [0.0]

    def report(done: int, total: Optional[int]) -> None:
        now = time.monotonic()
        if total and (now - last[0] >= 0.2 or done >= total):
            last[0] = now
            events.emit("progress", done=done, total=total, stage=stage, unit="B")
        events.check_cancel()

    _check_cache(part)
    for attempt in range(attempts):
        try:
            _attempt(url, part, timeout, report)
            return part
        except _Dropped as exc:
            reason = str(exc)
            if attempt + 1 < attempts:
                events.warn(f"{url}: {reason}; resuming")
        except urllib.error.HTTPError as exc:
            raise UserError(f"{url}: the server answered HTTP {exc.code} {exc.reason}") from exc
        except (urllib.error.URLError, OSError, http.client.HTTPException) as exc:
            why = getattr(exc, "reason", None) or exc
            raise UserError(f"{url}: cannot connect ({getattr(why, 'strerror', None) or why})") from exc
    raise UserError(f"{url}: {reason}; run again to resume ({part} keeps what arrived)")


def _check_cache(part: Path) -> None:
    """The cache folder of ``part`` made and writable, before connecting: a cache that is a
    file, cannot be created or is read-only is one line about the cache, never "cannot connect"."""
    try:
        part.parent.mkdir(parents=True, exist_ok=True)
        with open(part, "ab"):
            pass
    except OSError as exc:
        raise UserError(f"{part.parent}: the download cache is not a writable folder "
                        f"({exc.strerror or exc}); set HRMNET_CACHE to one") from None


def _check_layout(path: Path) -> None:
    """Keys and shapes of a timm ``resnet18d`` state dict (the backbone loader's own check)."""
    from safetensors.torch import load_file

    from .model import ResNet18D, load_timm_resnet18d

    try:
        state = load_file(str(path))
    except Exception as exc:  # safetensors raises its own error types for a damaged header
        raise UserError(f"{path}: not a safetensors file ({str(exc).strip()[:120] or type(exc).__name__})") from exc
    try:
        load_timm_resnet18d(ResNet18D(), {k: v.float() for k, v in state.items()})
    except ValueError as exc:
        raise UserError(f"{path}: {exc}") from exc


def _verify(path: Path, sha256: str) -> Optional[str]:
    """None when ``path`` has the expected sha256 (empty ``sha256``: not checked), else the problem."""
    if sha256:
        got = file_sha256(path)
        if got != sha256.lower():
            return f"sha256 {got[:12]}… differs from timm's resnet18d.ra2_in1k file ({sha256[:12]}…)"
    return None


def _by_hand(target: Path) -> str:
    return (f"without a connection, download {IMAGENET_URL} elsewhere and put it at {target} "
            "(or give --backbone FILE; HRMNET_BACKBONE_URL sets another address)")


def imagenet_backbone(events: Optional[Events] = None, environ: Optional[Mapping[str, str]] = None,
                      timeout: float = 30.0) -> Path:
    """The cached timm ``resnet18d`` ImageNet weights, downloaded and verified on first use.

    Raises:
        UserError: offline (the message says where to put the file by hand), an HTTP
            error, or a file that fails the integrity check (it is removed).
    """
    env = os.environ if environ is None else environ
    events = events or Events()
    url = env.get("HRMNET_BACKBONE_URL") or IMAGENET_URL
    sha256 = env.get("HRMNET_BACKBONE_SHA256", IMAGENET_SHA256).strip()
    target = cache_dir(env) / IMAGENET_FILE
    if target.is_file():
        problem = _verify(target, sha256)
        if problem is None:
            _check_layout(target)
            return target
        events.warn(f"{target}: {problem}; downloading it again")
        target.unlink()
    part = target.with_name(target.name + ".part")
    events.log(f"downloading the ImageNet backbone (timm resnet18d.ra2_in1k, 47 MB) from {url} to {target}")
    try:
        download(url, part, events, timeout=timeout, stage="ImageNet backbone")
    except UserError as exc:
        if "cannot connect" in str(exc):
            raise UserError(f"{exc}; {_by_hand(target)}") from exc
        raise
    problem = _verify(part, sha256)
    if problem is not None:
        part.unlink()
        raise UserError(f"{url}: downloaded file rejected: {problem}; removed it")
    try:
        _check_layout(part)
    except UserError as exc:
        part.unlink()
        raise UserError(f"{url}: downloaded file rejected: {str(exc).split(': ', 1)[-1]}; removed it") from exc
    os.replace(part, target)
    events.log(f"ImageNet backbone verified and cached: {target}")
    return target
