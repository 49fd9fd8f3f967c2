"""`pabt_tf.flatbuffer_guard`: malformed flatbuffers get a clear error, never a crash.

The fuzz test runs in a child process (a segfault there fails the test instead of killing
pytest); the targeted tests build one defect each with the TFLite schema's object API.
"""

import json
import os
import subprocess
import sys

import flatbuffers
import larq as lq
import larq_compute_engine as lce
import numpy as np
import pytest
import tensorflow as tf

from pabt_tf import flatbuffer_guard as guard
from pabt_tf.flatbuffer_guard import MalformedFlatbufferError, check_flatbuffer
from pabt_tf.flatbuffer_guard.structure import unpack_model

TESTS = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(TESTS)
sys.path.insert(0, TESTS)
from _flatbuffer_fuzz_worker import make_cases  # noqa: E402

# What every rejection says first, by kind of defect.
KINDS = (
    "is not a TFLite flatbuffer",
    "truncated or corrupted TFLite flatbuffer",
    "malformed TFLite flatbuffer",
    "TF Lite's flatbuffer verifier rejects",
)


@pytest.fixture(scope="module")
def tiny_flatbuffer(tmp_path_factory) -> str:
    """A small Larq BNN (bit-packed output between two binary convolutions, a mean and a
    dense layer) converted by LCE: LceQuantize, 2 LceBconv2d, MEAN, FULLY_CONNECTED."""
    tf.keras.utils.set_random_seed(0)
    binary = dict(input_quantizer="ste_sign", kernel_quantizer="ste_sign",
                  kernel_constraint="weight_clip", use_bias=False, pad_values=1.0)  # fmt: skip
    inp = tf.keras.Input((8, 8, 3))
    x = lq.layers.QuantConv2D(8, 3, padding="same", **binary)(inp)
    x = tf.keras.layers.BatchNormalization()(x)
    x = lq.layers.QuantConv2D(8, 3, padding="same", **binary)(x)
    x = tf.keras.layers.BatchNormalization()(x)
    x = tf.keras.layers.GlobalAveragePooling2D()(x)
    model = tf.keras.Model(inp, tf.keras.layers.Dense(4)(x))
    path = tmp_path_factory.mktemp("guard") / "tiny.tflite"
    path.write_bytes(lce.convert_keras_model(model))
    return str(path)


def _unpack(data: bytes):
    return unpack_model(data)[1]


def _pack(model) -> bytes:
    builder = flatbuffers.Builder(0)
    builder.Finish(model.Pack(builder), file_identifier=b"TFL3")
    return bytes(builder.Output())


def _with(array, index: int, value) -> np.ndarray:
    array = np.array(array)  # the unpacked arrays are read-only views of the bytes
    array[index] = value
    return array


def _op(model, name: str):
    codes = [c.customCode.decode() if c.customCode else None for c in model.operatorCodes]
    return next(op for op in model.subgraphs[0].operators if codes[op.opcodeIndex] == name)


def _rejects(data: bytes, *fragments: str) -> str:
    with pytest.raises(MalformedFlatbufferError) as info:
        check_flatbuffer(data, "model.tflite")
    message = str(info.value)
    assert message.startswith("model.tflite"), message
    for fragment in fragments:
        assert fragment in message, message
    return message


def test_a_real_lce_flatbuffer_passes(tiny_flatbuffer):
    data = open(tiny_flatbuffer, "rb").read()
    check_flatbuffer(data)
    check_flatbuffer(bytearray(data))
    check_flatbuffer(_pack(_unpack(data)))  # a re-packed copy is as good
    guard.probe_in_subprocess(data)
    with pytest.raises(TypeError, match="must be bytes"):
        check_flatbuffer("model.tflite")


def test_identifier_and_root_offset(tiny_flatbuffer):
    data = open(tiny_flatbuffer, "rb").read()
    for bad in (b"", b"TFL3", b"\0" * 64, b"PK\x03\x04" + b"\0" * 60, data[:4] + b"TFL2" + data[8:]):
        _rejects(bad, "is not a TFLite flatbuffer")
    _rejects(b"\xff\xff\x00\x00TFL3" + data[8:], "truncated or corrupted", "root table")


def test_structure_truncated_and_corrupted(tiny_flatbuffer):
    data = open(tiny_flatbuffer, "rb").read()
    _rejects(data[:-4], "truncated or corrupted", f"outside its {len(data) - 4} bytes")
    _rejects(data[: len(data) // 2], "truncated or corrupted")


@pytest.mark.parametrize(
    "defect, fragments",
    [
        ("operator input index", ("operator 3 (MEAN) inputs", "tensor index 99 outside")),
        ("tensor buffer index", ("tensor 0", "buffer index 999 outside")),
        ("opcode index", ("operator code index 7 outside",)),
        ("subgraph output", ("subgraph 0 outputs", "tensor index 42 outside")),
        ("constant size", ("constant data of 28 bytes", "needs 32")),
        ("rewired input", ("operator 3 (MEAN)", "reads tensor 12 before any operator writes it")),
        ("bconv stride", ("LceBconv2d", "option 'stride_width' = 0, expected a positive")),
        ("bconv channels", ("LceBconv2d", "bit-packed input of 1 words for channels_in = 40")),
        ("bconv missing thresholds", ("LceBconv2d", "inputs [1, 4] must be present")),
        ("bconv options", ("LceBconv2d", "custom options are not a readable flexbuffer")),
        ("quantize output", ("LceQuantize", "output shape [1, 8, 8, 5]")),
        ("huge shape", ("needs 17179869184 bytes, over 2 GiB",)),
        ("schema version", ("schema version 2, expected 3",)),
    ],
)
def test_semantic_defects(tiny_flatbuffer, defect, fragments):
    model = _unpack(open(tiny_flatbuffer, "rb").read())
    graph = model.subgraphs[0]
    bconv = _op(model, "LceBconv2d")  # the first: bit-packed output, thresholds input
    if defect == "operator input index":
        graph.operators[3].inputs = _with(graph.operators[3].inputs, 0, 99)
    elif defect == "tensor buffer index":
        graph.tensors[0].buffer = 999
    elif defect == "opcode index":
        graph.operators[1].opcodeIndex = 7
    elif defect == "subgraph output":
        graph.outputs = _with(graph.outputs, 0, 42)
    elif defect == "constant size":
        const = next(t for t in graph.tensors if list(t.shape) == [8] and model.buffers[t.buffer].data is not None)
        model.buffers[const.buffer].data = model.buffers[const.buffer].data[:28]
    elif defect == "rewired input":  # the mean reads the dense layer's output
        graph.operators[3].inputs = _with(graph.operators[3].inputs, 0, graph.operators[4].outputs[0])
    elif defect == "bconv stride":
        bconv.customOptions = _flexbuffer_with(bconv.customOptions, stride_width=0)
    elif defect == "bconv channels":
        bconv.customOptions = _flexbuffer_with(bconv.customOptions, channels_in=40)
    elif defect == "bconv missing thresholds":
        bconv.inputs = _with(bconv.inputs, 4, -1)
    elif defect == "bconv options":
        bconv.customOptions = np.frombuffer(b"\x07\xff\x01", np.uint8)
    elif defect == "quantize output":
        quantize = _op(model, "LceQuantize")
        graph.tensors[quantize.outputs[0]].shape = np.array([1, 8, 8, 5], np.int32)
    elif defect == "huge shape":
        graph.tensors[graph.inputs[0]].shape = np.array([1, 2**16, 2**14, 4], np.int32)
    elif defect == "schema version":
        model.version = 2
    _rejects(_pack(model), *fragments)


def _flexbuffer_with(raw, **changes) -> np.ndarray:
    from flatbuffers import flexbuffers

    options = dict(flexbuffers.Loads(bytes(bytearray(raw))))
    options.update(changes)
    return np.frombuffer(bytes(flexbuffers.Dumps(options)), np.uint8)


def test_fuzz_no_crash_and_clear_errors(tiny_flatbuffer):
    """Truncations of every length class and ~950 random corruptions of a real LCE
    flatbuffer, in a child process: each is validated, and run in LCE's interpreter (both
    kernel kinds) only if validation passed. No case may crash the process (glibc's heap
    checks on, so silent heap damage aborts too); every rejection is a
    `MalformedFlatbufferError` saying which kind of defect."""
    cases = make_cases(open(tiny_flatbuffer, "rb").read(), seed=0)
    proc = subprocess.run(
        [sys.executable, os.path.join(TESTS, "_flatbuffer_fuzz_worker.py"), tiny_flatbuffer, "0", "0"],
        capture_output=True, text=True, cwd=REPO, timeout=600,
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "MALLOC_CHECK_": "3"},
    )  # fmt: skip
    lines = [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]
    done = [line for line in lines if "done" in line]
    if proc.returncode != 0:
        started = [line for line in lines if "start" in line]
        last = started[-1] if started else None
        pytest.fail(f"worker exited {proc.returncode} at case {last}; stderr:\n{proc.stderr[-2000:]}")
    assert len(done) == len(cases)
    for result in done:
        name = cases[result["done"]][0]
        assert result["verdict"] in ("pass", "reject"), (name, result)
        if result["verdict"] == "reject":
            message = result["message"]
            assert message.startswith("case"), (name, message)
            assert any(kind in message for kind in KINDS), (name, message)
    verdicts = [r["verdict"] for r in done]
    # Every truncation is rejected; most corruptions too; valid-looking ones ran.
    truncated = [r for r in done if "bytes" in cases[r["done"]][0] and "random" not in cases[r["done"]][0]]
    assert all(r["verdict"] == "reject" for r in truncated)
    assert verdicts.count("pass") > 50 and verdicts.count("reject") > 500


def test_probe_turns_a_crash_into_an_error(tiny_flatbuffer):
    data = open(tiny_flatbuffer, "rb").read()
    # Unchecked, LCE's interpreter dies on a truncated file; the probe reports it.
    with pytest.raises(MalformedFlatbufferError, match=r"crashed \(SIG(SEGV|BUS|ABRT)\)"):
        guard.probe_in_subprocess(data[: len(data) // 2], "cut.tflite")


def test_benchmark_cli_on_malformed_files(tiny_flatbuffer, tmp_path):
    """`pabt-benchmark` on a truncated, a tail-cut and a corrupted file: exit 2 with the
    reason, in a fresh process (a crash would be rc 139)."""
    data = open(tiny_flatbuffer, "rb").read()
    model = _unpack(data)
    graph = model.subgraphs[0]
    graph.operators[3].inputs = _with(graph.operators[3].inputs, 0, graph.operators[4].outputs[0])
    files = {
        "half.tflite": data[: len(data) // 2],
        "tail.tflite": data[:-3],
        "rewired.tflite": _pack(model),
        "good.tflite": data,
    }
    script = (
        "import json, sys\nfrom pabt_tf.cli import benchmark\n"
        "codes = [benchmark.main([p, '--rounds', '1', '--repeats', '1']) for p in sys.argv[1:]]\n"
        "print(json.dumps(codes))\n"
    )
    for name, content in files.items():
        (tmp_path / name).write_bytes(content)
    proc = subprocess.run(
        [sys.executable, "-c", script, *[str(tmp_path / name) for name in files]],
        capture_output=True, text=True, cwd=REPO, timeout=300,
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"},
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert json.loads(proc.stdout.strip().splitlines()[-1]) == [2, 2, 2, 0]
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 3
    assert "half.tflite" in errors[0] and "truncated or corrupted" in errors[0]
    assert "tail.tflite" in errors[1] and "truncated or corrupted" in errors[1]
    assert "rewired.tflite" in errors[2] and "before any operator writes it" in errors[2]


def test_host_latencies_checks_its_flatbuffers(tiny_flatbuffer):
    from pabt_tf.export.latency import host_latencies

    data = open(tiny_flatbuffer, "rb").read()
    with pytest.raises(ValueError, match="flatbuffer 'model'.*truncated or corrupted"):
        host_latencies({"model": data[:-8]}, rounds=1, repeats=1)
