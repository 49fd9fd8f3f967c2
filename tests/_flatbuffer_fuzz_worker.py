"""Fuzz worker for tests/test_flatbuffer_guard.py: malformed variants of a real LCE
flatbuffer, each validated, and run in LCE's interpreter only if validation passed.

    python tests/_flatbuffer_fuzz_worker.py FLATBUFFER SEED START
    python tests/_flatbuffer_fuzz_worker.py --structured SEED START

The second form fuzzes models built from the schema instead (`make_structured_cases`):
control flow naming random subgraphs (self-references, cycles) and convolutions with
random channel counts (grouped ones), each also with random byte corruptions.

Prints one JSON line before each case (`{"start": i}`, so a crash names its case) and one
after (`{"done": i, "verdict": "pass" | "reject", "message": ..., "ran": ...}`).
"""

from __future__ import annotations

import json
import os
import random
import struct
import sys

# Values a corrupted 32-bit field takes: boundaries, and small moves off the true value.
_WORD_VALUES = (0, 1, 2, 3, 32, -1, 2**31 - 1, -(2**31))


def make_cases(flatbuffer: bytes, seed: int) -> list[tuple[str, bytes]]:
    """Truncations of every length class and random corruptions, deterministic in `seed`."""
    rng = random.Random(seed)
    fb, n = flatbuffer, len(flatbuffer)
    cases = [(f"first {k} bytes (header only)", fb[:k]) for k in range(0, 65, 2)]
    cases += [(f"first {k} of {n} bytes", fb[:k]) for k in sorted(rng.sample(range(65, n - 16), 180))]
    cases += [(f"last {k} bytes cut", fb[:-k]) for k in range(1, 17)]
    for i in range(500):
        data = bytearray(fb)
        flips = rng.choice((1, 1, 2, 4, 16))
        for _ in range(flips):
            data[rng.randrange(8, n)] = rng.randrange(256)
        cases.append((f"{flips} random byte(s) #{i}", bytes(data)))
    for i in range(450):
        data = bytearray(fb)
        pos = rng.randrange(8, n - 4) & ~3
        (old,) = struct.unpack_from("<i", data, pos)
        new = rng.choice(_WORD_VALUES + (old + 1, old - 1, old * 2, old + 4))
        struct.pack_into("<I", data, pos, new % 2**32)
        cases.append((f"word at {pos}: {old} -> {new}", bytes(data)))
    return cases


def make_structured_cases(seed: int) -> list[tuple[str, bytes]]:
    """IF / WHILE / CALL_ONCE naming random subgraphs (in range, out of range, themselves,
    each other) and CONV_2D with random input, filter-input and filter channel counts;
    plus random byte corruptions of valid ones. Deterministic in `seed`."""
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    from _tflite_builders import control_flow_model, conv_model, pack

    rng = random.Random(seed)
    cases = []
    arity = {"IF": 2, "WHILE": 2, "CALL_ONCE": 1}
    for i in range(150):
        kind = rng.choice(sorted(arity))
        indices = tuple(rng.choice((-1, 0, 0, 1, 2, 3, 3, 4)) for _ in range(arity[kind]))
        model = control_flow_model(kind, indices)
        name = f"{kind} naming subgraphs {indices}"
        if rng.random() < 0.4:  # a callee that calls back: mutual recursion, or a chain
            callee = rng.randrange(1, 4)
            model.subgraphs[callee] = control_flow_model(kind, indices).subgraphs[0]
            name += f", subgraph {callee} a copy of subgraph 0"
        cases.append((name, pack(model)))
    for i in range(150):
        shape = (rng.randint(1, 32), rng.randint(1, 8), rng.randint(1, 16))
        name = f"CONV_2D input/filter-input/filter channels {shape}"
        cases.append((name, pack(conv_model(*shape))))
    valid = [pack(control_flow_model("IF", (1, 2))), pack(control_flow_model("WHILE", (3, 1))),
             pack(control_flow_model("CALL_ONCE", (1,))), pack(conv_model(8, 2, 4))]  # fmt: skip
    for i in range(200):
        data = bytearray(rng.choice(valid))
        for _ in range(rng.choice((1, 2, 4))):
            data[rng.randrange(8, len(data))] = rng.randrange(256)
        cases.append((f"random bytes of a valid model #{i}", bytes(data)))
    return cases


def main() -> None:
    path, seed, start = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    import numpy as np

    import pabt_tf  # noqa: F401  (Keras 2 before LCE's interpreter imports TensorFlow)

    # isort: split
    from larq_compute_engine.tflite.python.interpreter import Interpreter

    from pabt_tf.flatbuffer_guard import MalformedFlatbufferError, check_flatbuffer

    if path == "--structured":
        cases = make_structured_cases(seed)
    else:
        with open(path, "rb") as f:
            cases = make_cases(f.read(), seed)
    for i in range(start, len(cases)):
        name, data = cases[i]
        print(json.dumps({"start": i, "name": name}), flush=True)
        result = {"done": i, "verdict": "pass", "message": "", "ran": ""}
        try:
            check_flatbuffer(data, "case")
        except MalformedFlatbufferError as err:
            result.update(verdict="reject", message=str(err))
        except Exception as err:  # the test fails on these: not the promised error type
            result.update(verdict="error", message=f"{type(err).__name__}: {err}")
        if result["verdict"] == "pass":
            for indirect in (False, True):
                try:
                    interpreter = Interpreter(data, use_indirect_bgemm=indirect)
                    shapes, types = interpreter.input_shapes, interpreter.input_types
                    # A corrupted (valid) shape may be huge.
                    if sum(np.prod(shape) for shape in shapes) <= 10**7:
                        inputs = [np.zeros(shape, dtype) for shape, dtype in zip(shapes, types)]
                        interpreter.predict(inputs[0] if len(inputs) == 1 else inputs)
                    result["ran"] += "ok "
                except Exception as err:  # LCE refusing cleanly is fine; crashing is not
                    result["ran"] += f"{type(err).__name__} "
        print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
