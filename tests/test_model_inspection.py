"""Issue 20, items 2 and 4: the inspection before loading finds the real container (HDF5
user blocks, zips with bytes prepended) and code-carrying layers in every spelling Keras
resolves; SavedModels whose layers would be revived from the saved graph are refused
without --unsafe. Whatever could run a model's code runs in a fresh process, with a
marker file that the code would create."""

import json
import os
import shutil
import subprocess
import sys
import zipfile

import h5py
import pytest
import tensorflow as tf

import pabt_tf as pabt
from pabt_tf.cli.model_loading import code_in_config, code_in_model

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


class Writer(tf.keras.layers.Layer):
    """A layer Keras does not know in a fresh process: revived from a SavedModel's graph,
    it writes the marker file when the model runs."""

    def __init__(self, marker: str = "", **kwargs):
        super().__init__(**kwargs)
        self.marker = marker

    def call(self, x):
        tf.io.write_file(self.marker, "ran")
        return x


def _model(marker: str | None = None, writer: bool = False) -> tf.keras.Model:
    inp = tf.keras.Input((8, 8, 3))
    x = pabt.PaBTConv2D(8, 3, padding="same", weight_bases=2, activation_bases=2)(inp)
    if marker and not writer:
        code = f"lambda t: (open({marker!r}, 'a').close(), t)[1]"
        x = tf.keras.layers.Lambda(eval(code))(x)  # its bytecode is stored in the file
    if marker and writer:
        x = Writer(marker, name="writer")(x)
    x = tf.keras.layers.Flatten()(x)
    return tf.keras.Model(inp, tf.keras.layers.Dense(4)(x))


def _respell_keras(source: str, target: str, prefix: bytes = b"", **spelling) -> str:
    """A copy of a .keras archive whose Lambda's config entries are `spelling`, with
    `prefix` bytes before the zip."""
    with zipfile.ZipFile(source) as archive:
        entries = {info.filename: archive.read(info) for info in archive.infolist()}
    config = json.loads(entries["config.json"])
    for layer in config["config"]["layers"]:
        if layer["class_name"] == "Lambda":
            layer.update(spelling)
    entries["config.json"] = json.dumps(config).encode()
    with open(target, "wb") as f:
        f.write(prefix)
        with zipfile.ZipFile(f, "w") as archive:
            for name, data in entries.items():
                archive.writestr(name, data)
    return target


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict:
    root = tmp_path_factory.mktemp("inspect")
    marker = str(root / "MARKER")
    paths = {"root": str(root), "marker": marker}
    lam = _model(marker)
    for block in (512, 2048):  # HDF5 user blocks: the signature at byte 512 / 2048
        paths[f"h5 block {block}"] = str(root / f"block{block}.h5")
        with h5py.File(paths[f"h5 block {block}"], "w", userblock_size=block) as f:
            lam.save(f)
    lam.save(root / "lambda.keras")
    keras_file = str(root / "lambda.keras")
    spellings = {
        "layers.Lambda": dict(class_name="layers.Lambda", module="keras"),
        "module tf_keras": dict(class_name="layers.Lambda", module="tf_keras"),
        "keras.src module": dict(module="keras.src.layers.core.lambda_layer"),
        "registered name": dict(class_name="Custom", registered_name="keras.layers>Lambda"),
    }
    for tag, spelling in spellings.items():
        paths[tag] = _respell_keras(keras_file, str(root / f"{tag}.keras"), **spelling)
    paths["prepended"] = _respell_keras(keras_file, str(root / "prepended.keras"), b"\0" * 300)
    # SavedModels: a layer class Keras will not know, with and without Keras metadata, and
    # one whose metadata names a known class with a config that does not rebuild.
    writer = _model(marker, writer=True)
    paths["unknown class"] = str(root / "unknown_sm")
    writer.save(paths["unknown class"], save_format="tf")
    paths["no metadata"] = str(root / "nometa_sm")
    shutil.copytree(paths["unknown class"], paths["no metadata"])
    os.remove(os.path.join(paths["no metadata"], "keras_metadata.pb"))
    paths["bad config"] = str(root / "badconfig_sm")
    shutil.copytree(paths["unknown class"], paths["bad config"])
    _rewrite_metadata(paths["bad config"], "writer", class_name="Dense", config={"name": "writer"})
    if os.path.exists(marker):  # building and saving ran the lambda / the writer
        os.remove(marker)
    return paths


def _rewrite_metadata(saved_model: str, layer: str, **entries) -> None:
    from tf_keras.protobuf import saved_metadata_pb2

    path = os.path.join(saved_model, "keras_metadata.pb")
    metadata = saved_metadata_pb2.SavedMetadata()
    metadata.ParseFromString(open(path, "rb").read())
    for node in metadata.nodes:
        data = json.loads(node.metadata) if node.metadata else {}
        if data.get("name") == layer:
            data.update(entries)
            node.metadata = json.dumps(data)
    open(path, "wb").write(metadata.SerializeToString())


@pytest.mark.parametrize("tag", ["h5 block 512", "h5 block 2048", "layers.Lambda", "module tf_keras",
                                 "keras.src module", "registered name", "prepended"])  # fmt: skip
def test_inspection_finds_the_lambda_in_every_container_and_spelling(files, tag):
    found = code_in_model(files[tag])
    assert found == ["Lambda layer 'lambda'"], found
    assert "runs the Python function stored in the file" in found[0].why
    if tag in ("layers.Lambda", "module tf_keras", "registered name"):
        assert "(class_name " in found[0].why


def test_code_in_config_recognises_what_keras_resolves():
    def node(**entries):
        return {"config": {"name": "x"}, **entries}

    lambdas = [node(class_name="keras.layers.Lambda"), node(class_name="Lambda", module="tf_keras"),
               node(class_name="Foo", registered_name="Lambda"),
               node(class_name="tf_keras.src.layers.core.lambda_layer.Lambda")]  # fmt: skip
    for config in lambdas:
        assert code_in_config(config) == ["Lambda layer 'x'"], config
    tf_op = node(class_name="layers.TFOpLambda", module="tf_keras", config={"name": "w", "function": "io.write_file"})
    assert code_in_config(tf_op) == ["TFOpLambda layer 'w' calling tf.io.write_file"]
    functions = {"class_name": "Activation", "config": {"name": "a", "activation": [
        {"class_name": "function", "module": "tensorflow.io", "config": "write_file"},
        {"class_name": "function", "module": "numpy", "config": "save"},
        {"class_name": "function", "module": "builtins", "config": "relu"},
        {"class_name": "function", "module": "tensorflow.math", "config": "tanh"}]}}  # fmt: skip
    assert code_in_config(functions) == ["function tensorflow.io.write_file", "function numpy.save"]


SCRIPT = r"""
import json, os, sys
from pabt_tf.cli import convert
results = []
for argv in json.loads(sys.argv[1]):
    code = convert.main(argv)
    results.append([code, os.path.exists(sys.argv[2])])
    if os.path.exists(sys.argv[2]):
        os.remove(sys.argv[2])
# --unsafe loads it; running the model runs the revived layer's graph, which writes.
from pabt_tf.cli.model_loading import load_keras_model
import numpy as np
load_keras_model(sys.argv[3], unsafe=True)(np.zeros((1, 8, 8, 3), np.float32))
results.append(os.path.exists(sys.argv[2]))
print(json.dumps(results))
"""


def test_files_carrying_code_are_refused_before_it_runs(files):
    """Fresh process. Without --unsafe each file exits 2 naming the layer and why, and the
    marker never appears; loaded with unsafe=True and run, the unknown-class SavedModel's
    revived layer writes the marker (so these files would run code)."""
    out = os.path.join(files["root"], "out.tflite")
    tags = ["h5 block 512", "layers.Lambda", "module tf_keras", "prepended", "unknown class",
            "no metadata", "bad config"]  # fmt: skip
    runs = [[files[tag], out, "--verify-samples", "2"] for tag in tags]
    proc = subprocess.run([sys.executable, "-c", SCRIPT, json.dumps(runs), files["marker"],
                           files["unknown class"]], capture_output=True, text=True, cwd=REPO,
                          timeout=900)  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = json.loads(proc.stdout.strip().splitlines()[-1])
    assert results == [[2, False]] * len(tags) + [True], (results, proc.stderr[-3000:])
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == len(tags) and all("--unsafe" in line for line in errors), errors
    for line in errors[:4]:
        assert "Lambda layer 'lambda' (Keras' Lambda" in line, line
        assert "runs the Python function stored in the file" in line, line
    assert ("layer 'writer' of class 'Writer', which Keras does not know (it would be "
            "revived from the SavedModel's graph") in errors[4]
    assert "a SavedModel without Keras metadata (no keras_metadata.pb)" in errors[5]
    assert "layers ['writer'] were revived from the SavedModel's graph" in errors[6]


def test_help_says_which_saved_models_need_unsafe(capsys):
    from pabt_tf.cli import convert

    with pytest.raises(SystemExit):
        convert.main(["--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "--unsafe" in text and "SavedModels without Keras metadata" in text, text
