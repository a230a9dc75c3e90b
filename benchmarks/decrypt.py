"""What an encrypted model costs a device: decryption time and extra peak memory.

    .venv/bin/python benchmarks/decrypt.py [--model M.tflite] [--rounds 20] [--invokes 30]

(the fixtures are read from tests/fixtures, or EDGE_AGENT_FIXTURES)

On a ~4 MB model (the SSD MobileNet v1 fixture by default), in the same run:

  read plaintext     Path.read_bytes() of the plain model: what loading it costs today
  decrypt            decrypt_model(): read the ciphertext chunk by chunk, unwrap the
                     content key (HPKE, X25519), open every chunk, SHA-256 of the
                     plaintext; median over the rounds, per cipher
  extra              decrypt - read plaintext: what encryption adds to an update
                     (target: <= 50 ms with the default cipher)
  peak memory        tracemalloc's peak during each, and the difference as a multiple
                     of the model's size
  invoke             median invoke() of the model loaded from the file and from the
                     decrypted bytes, interleaved: encryption must add nothing to
                     inference (decryption happens once, at load; the interpreter then
                     holds the same flatbuffer either way)
"""

from __future__ import annotations

import argparse
import hashlib
import os
import statistics
import sys
import tempfile
import time
import tracemalloc
from collections.abc import Callable
from pathlib import Path

import numpy as np
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from edge_agent.model.runtime import Model
from edge_agent.update.decrypt import decrypt_model
from edge_agent.update.envelope import CIPHERS, DEFAULT_CIPHER, read_header, seal
from edge_agent.update.manifest import Encryption, FileRef

PROJECT = Path(__file__).resolve().parents[1]
FIXTURES = Path(os.environ.get("EDGE_AGENT_FIXTURES", PROJECT / "tests" / "fixtures"))
DEFAULT_MODEL = FIXTURES / "models" / "ssd_mobilenet_v1_coco_quant.tflite"
TARGET_MS = 50.0
NOISE = 1.10  # invoke() ratios within this are the same speed on a shared 2-core VM


def timed(action: Callable[[], object], rounds: int) -> float:
    """Median milliseconds of `action` over `rounds` runs, after one warm-up."""
    action()
    samples = []
    for _ in range(rounds):
        start = time.perf_counter()
        action()
        samples.append((time.perf_counter() - start) * 1000)
    return statistics.median(samples)


def peak(action: Callable[[], object]) -> int:
    """Peak bytes Python allocated while `action` ran (its result included)."""
    tracemalloc.start()
    try:
        action()
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def encrypted(
    model: Path, directory: Path, cipher: str, key: X25519PrivateKey
) -> tuple[Path, FileRef]:
    plaintext = model.read_bytes()
    data = seal(plaintext, [key.public_key()], cipher=cipher)
    path = directory / f"{model.name}.{cipher}.enc"
    path.write_bytes(data)
    with path.open("rb") as handle:
        recipients = tuple(read_header(handle).wrapped)
    sha = hashlib.sha256(plaintext).hexdigest()
    encryption = Encryption(cipher, recipients, len(plaintext), sha)
    return path, FileRef(path.name, len(data), hashlib.sha256(data).hexdigest(), encryption)


def invoke_ms(models: tuple[Model, Model], invokes: int) -> tuple[float, float]:
    """Median invoke() of each model, interleaved so both see the same machine load."""
    probe = [np.zeros(spec.shape, dtype=spec.dtype) for spec in models[0].inputs]
    samples: tuple[list[float], list[float]] = ([], [])
    for _ in range(invokes):
        for model, kept in zip(models, samples, strict=True):
            start = time.perf_counter()
            model.infer(*probe)
            kept.append((time.perf_counter() - start) * 1000)
    return statistics.median(samples[0]), statistics.median(samples[1])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, default=DEFAULT_MODEL)
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--invokes", type=int, default=30)
    args = parser.parse_args(argv)
    size = args.model.stat().st_size
    key = X25519PrivateKey.generate()
    read_ms = timed(args.model.read_bytes, args.rounds)
    read_peak = peak(args.model.read_bytes)
    print(f"model {args.model.name}: {size / 1e6:.2f} MB")
    print(f"read plaintext        {read_ms:7.2f} ms   peak {read_peak / 1e6:6.2f} MB")
    results = {}
    with tempfile.TemporaryDirectory() as temp:
        for cipher in sorted(CIPHERS, key=lambda c: c != DEFAULT_CIPHER):
            path, ref = encrypted(args.model, Path(temp), cipher, key)
            ms = timed(lambda: decrypt_model(path, ref, key), args.rounds)  # noqa: B023
            top = peak(lambda: decrypt_model(path, ref, key))  # noqa: B023
            results[cipher] = ms - read_ms
            print(
                f"decrypt {cipher:17} {ms:7.2f} ms   peak {top / 1e6:6.2f} MB   "
                f"extra {ms - read_ms:6.2f} ms ({ms / read_ms:.1f}x the plain read), "
                f"extra peak {(top - read_peak) / 1e6:5.2f} MB ({(top - read_peak) / size:.2f}x "
                "the model)"
            )
        plain = Model.load(args.model, label="from the file")
        path, ref = encrypted(args.model, Path(temp), DEFAULT_CIPHER, key)
        decrypted = Model.load(decrypt_model(path, ref, key), label="from decrypted bytes")
    from_file, from_bytes = invoke_ms((plain, decrypted), args.invokes)
    print(
        f"invoke: {from_file:.2f} ms loaded from the file, {from_bytes:.2f} ms from decrypted "
        f"bytes (ratio {from_bytes / from_file:.2f})"
    )
    extra = results[DEFAULT_CIPHER]
    verdict = "PASS" if extra <= TARGET_MS else "MISS"
    print(f"{verdict}: decrypting adds {extra:.1f} ms to an update (target <= {TARGET_MS:.0f} ms)")
    ratio = from_bytes / from_file
    verdict = "PASS" if ratio <= NOISE else "MISS"
    print(
        f"{verdict}: nothing added to inference: invoke() {from_bytes:.2f} ms from decrypted "
        f"bytes vs {from_file:.2f} ms from the plain file ({(ratio - 1) * 100:+.0f}%, "
        f"within noise if <= {(NOISE - 1) * 100:.0f}%)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
