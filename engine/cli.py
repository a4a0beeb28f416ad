"""``python -m engine``: one subcommand a module in :mod:`engine.commands`.

User mistakes (:class:`~engine.errors.UserError`) print one line on stderr and exit 2;
a cancel or Ctrl-C exits 130; nothing prints a traceback except a real bug.
"""
from __future__ import annotations

import argparse
import importlib
import re
import sys
from typing import Optional, Sequence

from . import __version__
from .errors import Cancelled, UserError

__all__ = ["main", "build_parser"]

# Subcommand name -> module in engine.commands providing add_parser(subparsers).
COMMANDS = {
    "detect": "detect",
    "sheets": "sheets",
    "info": "info",
    "convert": "convert",
    "synth": "synth",
    "prepare": "prepare",
    "train": "train",
    "evaluate": "evaluate",
    "demo": "demo",
    "export": "export",
    "doctor": "doctor",
    "models": "models",
}
# Modules only the full engine has: a command reaching one without them says so in one line.
TORCH_MODULES = ("torch", "safetensors")


class OneLineParser(argparse.ArgumentParser):
    """argparse that reports a usage mistake in one line (plus exit 2)."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(2, f"{self.prog}: error: {message}\n")


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(prog="python -m engine", description="HRMNet change detection engine")
    parser.add_argument("--version", action="version", version=f"hrmnet-engine {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=OneLineParser)
    sub.required = True
    for name, module in COMMANDS.items():
        try:
            mod = importlib.import_module(f"engine.commands.{module}")
        except ModuleNotFoundError as exc:
            if exc.name == f"engine.commands.{module}":
                continue  # not built yet
            raise
        mod.add_parser(sub)
    return parser


def _error_event(args: argparse.Namespace, message: str) -> None:
    if getattr(args, "progress", None) == "jsonl":
        from .events import JsonlSink

        options = named_options(message, vars(args))
        JsonlSink()({"event": "error", "message": message, **({"options": options} if options else {})})


def named_options(message: str, values: dict) -> dict[str, str]:
    """The command's options that ``message`` names, each with its argparse dest
    (``{"--id-field": "id_field"}``): a front end (the QGIS plugin) shows its own labels."""
    found = {}
    for flag in re.findall(r"(?<![\w-])--[a-z][a-z0-9-]*(?![\w-])", message):
        dest = flag[2:].replace("-", "_")
        if dest in values:
            found[flag] = dest
    return found


def _listen_to_ctrl_c() -> None:
    """Make SIGINT raise KeyboardInterrupt even when the parent started us with it ignored
    (background jobs of a shell, some GUI hosts): Ctrl-C and the plugin's Stop must work."""
    import signal
    import threading

    if threading.current_thread() is threading.main_thread() and signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
        signal.signal(signal.SIGINT, signal.default_int_handler)


def main(argv: Optional[Sequence[str]] = None) -> int:
    _listen_to_ctrl_c()
    from .outputs import quiet_gdal

    quiet_gdal()  # failures are reported in one line; GDAL's own messages would add more
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except UserError as exc:
        _error_event(args, str(exc))
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except ModuleNotFoundError as exc:  # the light engine (onnxruntime, no torch)
        if (exc.name or "").split(".")[0] not in TORCH_MODULES:
            raise
        message = (f"{args.command}: needs torch, which is not installed here (without torch the engine runs "
                   "detect and sheets with --model MODEL.onnx, and info; export makes MODEL.onnx where torch is)")
        _error_event(args, message)
        print(f"error: {message}", file=sys.stderr)
        return 2
    except (Cancelled, KeyboardInterrupt):
        _error_event(args, "cancelled")
        print("cancelled", file=sys.stderr)
        return 130
