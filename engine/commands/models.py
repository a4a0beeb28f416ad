"""``python -m engine models list | get NAME | info NAME | path NAME``: the model catalogue.

See :mod:`engine.catalogue`: the shipped catalogue (demo models) plus ``$HRMNET_MODELS_URL``;
downloads go into ``$HRMNET_CACHE/models``, verified by sha256. A catalogue name works
wherever ``--model`` takes a file (detect, sheets, evaluate, export, train --init, info).
"""
from __future__ import annotations

import argparse
import json


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("models", help="the model catalogue: list, get (download), info, path",
                       description="Models by name: the catalogue shipped with the engine (the demo models) and "
                       "the one HRMNET_MODELS_URL names (an http(s) address or a file). 'get' downloads into the "
                       "cache (HRMNET_CACHE), resuming and checking the sha256. A name works as --model anywhere.")
    actions = p.add_subparsers(dest="action", metavar="ACTION", parser_class=type(p))
    actions.required = True
    listing = actions.add_parser("list", help="every catalogue model, its format and whether it is here")
    listing.add_argument("--json", action="store_true", help="one JSON object on stdout")
    for name, text in (("get", "download (when needed) and verify a model; prints its path"),
                       ("info", "a model's catalogue entry (GSD, bands, purpose, licence, metrics) as JSON"),
                       ("path", "the path of a model that is here (exit 2 when not downloaded yet)")):
        action = actions.add_parser(name, help=text)
        action.add_argument("name", metavar="NAME")
        action.add_argument("--format", choices=("onnx", "safetensors", "pth"),
                            help="which file of NAME (default: what this engine runs, .onnx without torch)")
    for action in actions.choices.values():
        action.add_argument("--progress", choices=("bar", "jsonl", "none"), default="bar",
                            help="bar: tqdm on stderr; jsonl: one JSON event a line on stdout (the plugin); none")
    p.set_defaults(func=run)


def _row(entry, path) -> dict:
    return {**entry.as_dict(), "available": path is not None, "path": str(path) if path else None}


def run(args: argparse.Namespace) -> int:
    from ..catalogue import available_path, cached_path, fetch_model, find, load_entries
    from ..errors import UserError
    from ..events import make_events

    events = make_events(args.progress)
    entries = load_entries(events=events)
    if args.action == "list":
        rows = [_row(e, available_path(e)) for e in entries]
        if args.progress == "jsonl":
            events.done({}, {"models": rows})
        elif args.json:
            print(json.dumps({"models": rows}, indent=2))
        else:
            for r in rows:
                size = f"{r['size'] / 1e6:.1f} MB" if r["size"] else "?"
                where = r["path"] if r["available"] else "not downloaded (models get " + r["name"] + ")"
                print(f"{r['name']:<24} {r['format']:<12} {size:>9}  {where}\n{'':<24} {r.get('purpose', '')}")
        return 0
    formats = (args.format,) if args.format else None
    entry = find(args.name, entries, formats)
    if args.action == "get":
        path = fetch_model(entry, events)
        events.done({"model": str(path)}, {"name": entry.name, "format": entry.format})
        if args.progress != "jsonl":
            print(path)
    elif args.action == "path":
        path = available_path(entry)
        if path is None:
            raise UserError(f"{entry.name}: not downloaded yet (python -m engine models get {entry.name}); "
                            f"it would be {cached_path(entry)}")
        print(path)
    else:
        row = _row(entry, available_path(entry))
        if args.progress == "jsonl":
            events.done({}, row)
        else:
            print(json.dumps(row, indent=2))
    return 0
