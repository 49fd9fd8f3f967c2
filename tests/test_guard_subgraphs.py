"""Issue 20, item 1: `pabt.verify` never takes the caller down. The guard rejects cyclic
subgraph references and convolutions whose channels do not split into groups (both crash
LCE's interpreter: SIGSEGV, SIGFPE); `verify` probes a flatbuffer it did not see `convert`
make in a child process first. Flatbuffers are built with the TFLite schema
(`_tflite_builders`); anything that could crash runs in a child process."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf

import pabt_tf as pabt
from pabt_tf.export import verification
from pabt_tf.flatbuffer_guard import MalformedFlatbufferError, check_flatbuffer, probe_in_subprocess
from pabt_tf.flatbuffer_guard.structure import unpack_model

TESTS = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(TESTS)
sys.path.insert(0, TESTS)
from _flatbuffer_fuzz_worker import make_structured_cases  # noqa: E402
from _tflite_builders import control_flow_model, conv_model, pack  # noqa: E402


def _mutual(kind: str, indices: tuple, callee: int, key: str):
    """Subgraph 0 calls subgraph `callee`, replaced by a copy of subgraph 0 whose option
    `key` names subgraph 0: the two call each other."""
    model = control_flow_model(kind, indices)
    copy = control_flow_model(kind, indices).subgraphs[0]
    setattr(copy.operators[0].builtinOptions, key, 0)
    model.subgraphs[callee] = copy
    return model


_VALID = {"IF": (1, 2), "WHILE": (3, 1), "CALL_ONCE": (1,)}


@pytest.mark.parametrize(
    "kind, model, fragment",
    [
        ("IF", control_flow_model("IF", (0, 2)), "thenSubgraphIndex 0 closes a cycle of subgraph calls (0 -> 0)"),
        ("IF", control_flow_model("IF", (1, 0)), "elseSubgraphIndex 0 closes a cycle of subgraph calls (0 -> 0)"),
        ("WHILE", control_flow_model("WHILE", (3, 0)), "bodySubgraphIndex 0 closes a cycle of subgraph calls (0 -> 0)"),
        ("WHILE", control_flow_model("WHILE", (0, 1)), "condSubgraphIndex 0 closes a cycle of subgraph calls (0 -> 0)"),
        ("CALL_ONCE", control_flow_model("CALL_ONCE", (0,)),
         "initSubgraphIndex 0 closes a cycle of subgraph calls (0 -> 0)"),
        ("IF", _mutual("IF", (1, 2), 1, "thenSubgraphIndex"),
         "subgraph 1, operator 0 (IF): thenSubgraphIndex 0 closes a cycle of subgraph calls (0 -> 1 -> 0)"),
        ("WHILE", _mutual("WHILE", (3, 2), 2, "bodySubgraphIndex"),
         "subgraph 2, operator 0 (WHILE): bodySubgraphIndex 0 closes a cycle of subgraph calls (0 -> 2 -> 0)"),
    ],
)  # fmt: skip
def test_cyclic_subgraph_references_are_rejected(kind, model, fragment):
    with pytest.raises(MalformedFlatbufferError) as info:
        check_flatbuffer(pack(model), "model.tflite")
    message = str(info.value)
    assert message.startswith("model.tflite: malformed TFLite flatbuffer: subgraph"), message
    assert fragment in message and "recurse without end" in message, message
    # The same operator naming other subgraphs passes, and LCE's interpreter runs it.
    valid = pack(control_flow_model(kind, _VALID[kind]))
    check_flatbuffer(valid)
    probe_in_subprocess(valid)


@pytest.mark.parametrize(
    "channels, fragment",
    [
        ((27, 3, 8), "8 filters cannot be split into the 9 groups of an input of 27 channels and a filter of 3"),
        ((5, 2, 4), "input of 5 channels is not a multiple of the filter's 2 input channels"),
        ((3, 6, 4), "input of 3 channels is not a multiple of the filter's 6 input channels"),
    ],
)  # fmt: skip
def test_convolutions_whose_channels_do_not_split_into_groups_are_rejected(channels, fragment):
    with pytest.raises(MalformedFlatbufferError, match="operator 0 \\(CONV_2D\\)") as info:
        check_flatbuffer(pack(conv_model(*channels)), "model.tflite")
    assert fragment in str(info.value), str(info.value)
    # Grouped convolutions that split (and a plain one) pass, and run.
    x, w, _ = channels
    for valid in ((x, x, 4), (2 * w, w, 6)):  # plain; 2 groups of 3 filters
        data = pack(conv_model(*valid))
        check_flatbuffer(data)
        probe_in_subprocess(data)


CRASHING = r"""
import json, sys
import numpy as np, tensorflow as tf
import pabt_tf as pabt
from pabt_tf.export import verification
from pabt_tf.flatbuffer_guard import MalformedFlatbufferError
sys.path.insert(0, "tests")
from _tflite_builders import control_flow_model, conv_model, pack

inp = tf.keras.Input((1,))
model = tf.keras.Model(inp, inp)
cases = {"grouped": pack(conv_model(27, 3, 8)), "while": pack(control_flow_model("WHILE", (3, 0)))}
messages, check = {}, verification.check_flatbuffer
for name, data in cases.items():
    for stage in ("guard", "probe"):
        # "probe": as for a defect the checks cannot see, only the probe stands
        verification.check_flatbuffer = check if stage == "guard" else lambda *args: None
        try:
            pabt.verify(model, data, np.zeros((1, 1), np.float32))
            messages[f"{name} {stage}"] = "NOT REJECTED"
        except MalformedFlatbufferError as err:
            messages[f"{name} {stage}"] = str(err)
print(json.dumps(messages))
"""


def test_verify_survives_flatbuffers_that_crash_the_interpreter():
    proc = subprocess.run([sys.executable, "-c", CRASHING], cwd=REPO, capture_output=True,
                          text=True, timeout=300)  # fmt: skip
    assert proc.returncode == 0, (proc.returncode, proc.stderr[-3000:])
    messages = json.loads(proc.stdout.strip().splitlines()[-1])
    assert "8 filters cannot be split into the 9 groups" in messages["grouped guard"]
    assert "bodySubgraphIndex 0 closes a cycle" in messages["while guard"]
    assert messages["grouped probe"].startswith("`flatbuffer`: LCE's interpreter crashed (SIGFPE)")
    assert messages["while probe"].startswith("`flatbuffer`: LCE's interpreter crashed (SIGSEGV)")


def test_verify_probes_only_flatbuffers_convert_did_not_make(monkeypatch):
    probes = []

    def counting_probe(*args, **kwargs):  # the real probe, counted
        probes.append(args[0])
        return probe_in_subprocess(*args, **kwargs)

    monkeypatch.setattr(verification, "probe_in_subprocess", counting_probe)
    inp = tf.keras.Input((6, 6, 2))
    x = pabt.PaBTConv2D(4, 3, padding="same", weight_bases=2, activation_bases=1)(inp)
    model = tf.keras.Model(inp, tf.keras.layers.GlobalAveragePooling2D()(x))
    x = np.random.default_rng(0).normal(size=(4, 6, 6, 2)).astype(np.float32)
    made = pabt.convert(model)
    assert pabt.verify(model, made, x).max_abs_diff < 1e-4 and probes == []
    foreign = pack(unpack_model(made)[1])  # the same model, bytes convert did not make
    assert foreign != made
    assert pabt.verify(model, foreign, x).max_abs_diff < 1e-4 and probes == [foreign]
    pabt.verify(model, made, x, probe=True)
    pabt.verify(model, foreign, x, probe=False)
    assert len(probes) == 2
    with pytest.raises(ValueError, match="`probe` must be None, True or False"):
        pabt.verify(model, made, x, probe="yes")


def test_fuzz_subgraph_references_and_grouped_convolutions_in_a_child():
    """500 schema-built cases (control flow naming random subgraphs, convolutions with
    random channel counts, byte corruptions of valid ones) in a child process with glibc's
    heap checks: each validated, run in LCE's interpreter (both kernel kinds) if it passed.
    No crash; every cycle and every ungroupable convolution is rejected."""
    cases = make_structured_cases(seed=0)
    proc = subprocess.run(
        [sys.executable, os.path.join(TESTS, "_flatbuffer_fuzz_worker.py"), "--structured", "0", "0"],
        capture_output=True, text=True, cwd=REPO, timeout=600,
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "MALLOC_CHECK_": "3"},
    )  # fmt: skip
    lines = [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]
    started = [line for line in lines if "start" in line]
    assert proc.returncode == 0, (proc.returncode, started[-1:], proc.stderr[-2000:])
    done = {line["done"]: line for line in lines if "done" in line}
    assert len(done) == len(cases)
    assert all(r["verdict"] in ("pass", "reject") for r in done.values()), done
    cycles = [i for i, (name, _) in enumerate(cases) if "closes a cycle" in done[i]["message"]]
    groups = [i for i, (name, _) in enumerate(cases) if "groups of an input" in done[i]["message"]
              or "is not a multiple of the filter" in done[i]["message"]]  # fmt: skip
    ran = [r for r in done.values() if r["verdict"] == "pass"]
    assert len(cycles) > 30 and len(groups) > 30 and len(ran) > 30, (len(cycles), len(groups), len(ran))
    for i, (name, _) in enumerate(cases[:300]):  # the schema-built ones: cause known
        if name.startswith("CONV_2D"):
            x, w, filters = (int(v) for v in name.split("(")[1].rstrip(")").split(","))
            splits = x % w == 0 and filters % (x // w) == 0
            assert (done[i]["verdict"] == "pass") == splits, (name, done[i])
