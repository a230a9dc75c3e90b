"""A camera for the bench's paced run: JPEG files written to stdout at a fixed rate,
back to back, as `rpicam-vid --codec mjpeg -o -` does. The agent reads it with a
`command` source (a live source: latest frame wins), so capture-to-decision is
measured as a real camera would see it.

    python -m edge_agent.devtools.bench_live --fps 10 FILE...
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

PACED_FPS = 10.0


def camera_command(files: Sequence[Path], fps: float = PACED_FPS) -> list[str]:
    """The command line of a camera offering `files` in a loop at `fps`."""
    return [
        sys.executable,
        "-m",
        "edge_agent.devtools.bench_live",
        "--fps",
        str(fps),
        *map(str, files),
    ]


def paced_config(
    model: Path,
    files: Sequence[Path],
    port: int,
    state_dir: Path,
    *,
    policy: dict[str, Any],
    fps: float = PACED_FPS,
) -> dict[str, Any]:
    """An agent with one camera pipeline fed by a live camera at `fps`."""
    return {
        "device_id": "bench",
        "state_dir": str(state_dir),
        "log_level": "warning",
        "mqtt": {"host": "127.0.0.1", "port": port},
        "pipelines": [
            {
                "name": "cam",
                "model": str(model),
                "source": {"kind": "command", "command": camera_command(files, fps)},
                "model_kind": "classifier",  # a detector is timed as a plain model
                "policy": policy,
            }
        ],
    }


def stream(frames: Sequence[bytes], fps: float) -> None:
    """Write `frames` to stdout in a loop, one every 1/fps s, on a steady clock."""
    out = sys.stdout.buffer
    period = 1.0 / fps
    due = time.monotonic()
    index = 0
    while True:
        out.write(frames[index % len(frames)])
        out.flush()
        index += 1
        due += period
        time.sleep(max(0.0, due - time.monotonic()))


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--fps", type=float, default=PACED_FPS)
    parser.add_argument("files", nargs="+")
    args = parser.parse_args(argv)
    try:
        stream([Path(f).read_bytes() for f in args.files], args.fps)
    except (BrokenPipeError, KeyboardInterrupt):  # the agent stopped reading
        return 0
    return 0


if __name__ == "__main__":
    sys.exit(main())
