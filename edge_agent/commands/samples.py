"""`edge-agent samples list|export`: the captured samples, for a person or a labelling tool.

`export DIR` writes `DIR/images/<name>` (the inputs as captured: JPEG, CSV or WAV)
and `DIR/index.jsonl`, one JSON object per sample: `file` (relative to DIR) and
the sidecar's fields (`pipeline`, `ts`, `model`, `outputs` = the model's top-k,
`decision`, `why`, `truth` when feedback gave it). Reading only: safe while the
daemon runs; samples already uploaded (no input left here) are skipped.
"""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path
from typing import TYPE_CHECKING, Any

from edge_agent.errors import ConfigError
from edge_agent.util.fs import atomic_write

if TYPE_CHECKING:  # the parser is built at every start; the rest only when it runs
    from edge_agent.capture.store import Entry

DEFAULT_CONFIG = Path("/etc/edge-agent/config.toml")


def register(commands: Any) -> None:
    samples = commands.add_parser("samples", help="list or export captured samples")
    sub = samples.add_subparsers(dest="samples_command", required=True)
    listing = sub.add_parser("list", help="one line per captured sample, oldest first")
    listing.add_argument("--json", action="store_true", help="the sidecars as JSON lines")
    export = sub.add_parser("export", help="images plus a JSON-lines index, for labelling")
    export.add_argument("directory", type=Path, help="where to write images/ and index.jsonl")
    for parser in (listing, export):
        parser.add_argument(
            "--config", "-c", type=Path, default=DEFAULT_CONFIG, help="to find the samples dir"
        )
        parser.add_argument("--dir", type=Path, default=None, help="the samples dir itself")
    listing.set_defaults(handler=cmd_list)
    export.set_defaults(handler=cmd_export)


def samples_dir(args: argparse.Namespace) -> Path:
    if args.dir is not None:
        return Path(args.dir)
    from edge_agent.config import settings as cfg  # noqa: PLC0415 - pydantic: only here

    settings = cfg.load_settings(args.config)
    return settings.samples.dir or settings.state_dir / "samples"


def _entries(args: argparse.Namespace) -> list[tuple[Entry, dict[str, Any]]]:
    from edge_agent.capture.store import read_sidecar, scan  # noqa: PLC0415

    directory = samples_dir(args)
    if not directory.is_dir():
        raise ConfigError(f"no samples directory at {directory}")
    found = []
    for entry in scan(directory):
        sidecar = read_sidecar(entry)
        if sidecar is not None:
            found.append((entry, sidecar))
    return found


def cmd_list(args: argparse.Namespace) -> int:
    for entry, side in _entries(args):
        if args.json:
            print(json.dumps({"name": entry.stem, "uploaded_input": entry.input is None, **side}))
            continue
        decision = (side.get("decision") or {}).get("state") or side.get("state")
        top = (side.get("outputs") or {}).get("top") or [{}]
        print(
            f"{side.get('ts', '?'):24} {side.get('pipeline', '?'):12} "
            f"{','.join(side.get('why', [])):24} {decision!s:14} "
            f"{top[0].get('label', '-')!s:16} {entry.input.name if entry.input else '(uploaded)'}"
        )
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    out: Path = args.directory
    images = out / "images"
    images.mkdir(parents=True, exist_ok=True)
    lines = []
    for entry, side in _entries(args):
        if entry.input is None:
            continue
        try:
            shutil.copyfile(entry.input, images / entry.input.name)
        except FileNotFoundError:  # evicted or uploaded meanwhile
            continue
        lines.append(json.dumps({"file": f"images/{entry.input.name}", **side}))
    atomic_write(out / "index.jsonl", "".join(f"{line}\n" for line in lines).encode())
    print(f"exported {len(lines)} sample(s) to {out}")
    return 0
