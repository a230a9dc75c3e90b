"""`edge-agent infer` on audio: a wake-word manifest or an audio model, WAV files in,
one JSON line per file out."""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from edge_agent.errors import InputError, ModelError
from edge_agent.model.labels import align_labels, read_labels, top_k
from edge_agent.pipeline.audio.listener import Heard, Listener, ListenerOptions, build_listener
from edge_agent.sources.audio.streams import DEFAULT_CHUNK_MS
from edge_agent.sources.audio.wav import read_wav
from edge_agent.sources.base import Audio


def is_audio_request(model: str, inputs: list[str]) -> bool:
    """A wake-word manifest, or WAV inputs: `infer` hands these to `infer_audio`."""
    return model.lower().endswith(".json") or any(i.lower().endswith(".wav") for i in inputs)


def infer_audio(args: argparse.Namespace) -> int:
    options = ListenerOptions(runtime=args.runtime, num_threads=args.threads or 1)
    listener = build_listener(args.model, options)
    failed = 0
    for stream, item in enumerate(args.inputs, start=1):
        try:
            result = run_file(listener, Path(item), stream)
        except (InputError, ModelError) as exc:
            print(f"edge-agent: {item}: {exc}", file=sys.stderr)
            failed += 1
            continue
        if listener.kind == "window":
            result = _window_summary(result, args)
        print(json.dumps(result), flush=True)
    return 4 if failed else 0


def run_file(listener: Listener, path: Path, stream: int) -> dict[str, Any]:
    """One file as one stream, fed in the chunks a live source would give."""
    samples, _ = read_wav(path, listener.frontend.rate)
    chunk = listener.frontend.rate * DEFAULT_CHUNK_MS // 1000
    heard: list[Heard] = []
    start = time.perf_counter()
    listener.reset()
    for offset in range(0, samples.size, chunk):
        part = Audio(
            samples[offset : offset + chunk], listener.frontend.rate, stream, offset, "", 0
        )
        heard.extend(listener.hear(part))
    latency = round((time.perf_counter() - start) * 1000.0, 3)
    result: dict[str, Any] = {"input": str(path)}
    if listener.policy is not None:
        result["detections"] = [h.event.as_dict() for h in heard if h.event is not None]
        result["peak"] = round(listener.policy.peak, 4)
    else:
        result["outputs"] = [h.output.reshape(-1) for h in heard]
    result["duration_s"] = round(samples.size / listener.frontend.rate, 3)
    result["latency_ms"] = latency
    return result


def _window_summary(result: dict[str, Any], args: argparse.Namespace) -> dict[str, Any]:
    """A window model's highest score per class over the file, as top-k."""
    outputs: list[np.ndarray] = result.pop("outputs")
    if not outputs:
        return {**result, "windows": 0, "top_k": []}
    peak = np.max(np.stack(outputs), axis=0)
    names = align_labels(read_labels(args.labels) if args.labels else None, peak.size, "labels")
    ranked = [vars(s) for s in top_k(peak, names, args.top_k)]
    return {**result, "windows": len(outputs), "top_k": ranked}
