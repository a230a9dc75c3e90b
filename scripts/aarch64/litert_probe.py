"""Load and run one model on LiteRT step by step, printing each step before doing it.

For docs/aarch64.md: run under qemu-aarch64-static, a crash shows which step it
happened in (the last line printed). Only ai_edge_litert and numpy are needed:

  python litert_probe.py MODEL [--no-default-delegates | --reference] [--threads N]
"""

from __future__ import annotations

import argparse
import time

# ruff: noqa: PLC0415  (the imports are steps too)

T0 = time.perf_counter()


def step(message: str) -> None:
    print(f"[{time.perf_counter() - T0:7.3f} s] {message}", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("model")
    group = parser.add_mutually_exclusive_group()
    group.add_argument(
        "--no-default-delegates",
        action="store_true",
        help="OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES (XNNPACK off)",
    )
    group.add_argument(
        "--reference", action="store_true", help="OpResolverType.BUILTIN_REF (reference kernels)"
    )
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()

    step("import ai_edge_litert, numpy")
    import numpy as np
    from ai_edge_litert import interpreter as litert

    options = {}
    if args.no_default_delegates:
        options["experimental_op_resolver_type"] = (
            litert.OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES
        )
    elif args.reference:
        options["experimental_op_resolver_type"] = litert.OpResolverType.BUILTIN_REF
    step(
        f"Interpreter(num_threads={args.threads}, {options or 'defaults'}), numpy {np.__version__}"
    )
    interpreter = litert.Interpreter(model_path=args.model, num_threads=args.threads, **options)
    step("allocate_tensors()")
    interpreter.allocate_tensors()
    spec = interpreter.get_input_details()[0]
    interpreter.set_tensor(spec["index"], np.zeros(spec["shape"], spec["dtype"]))
    step(f"invoke() on zeros {list(spec['shape'])} {spec['dtype'].__name__}")
    interpreter.invoke()
    out = interpreter.get_tensor(interpreter.get_output_details()[0]["index"])
    step(f"OK: output {list(out.shape)}, argmax {int(out.argmax())}")


if __name__ == "__main__":
    main()
