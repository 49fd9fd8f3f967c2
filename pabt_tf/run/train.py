"""Train one model of the zoo with one method, convert it, and write a run directory.

    python -m experiments.train --dataset fashion_mnist --model fmnist_cnn --method pabt \\
        --epochs 6 --output_dir runs/fmnist_pabt_s0

The run directory gets:

    checkpoints/epoch_XXX.*   weights after every epoch (TF checkpoint format)
    tensorboard/              Keras scalars (+ pabt/: mean binary convs, active convs per
                              layer, importance histograms)
    history.json              per-epoch metrics, active binary convs per layer, masks,
                              pruning events
    pruning.png               pruning trajectory: mean binary convs and validation accuracy
                              per epoch, per-layer heatmap of surviving binary convs, masks
    model.keras               the trained Keras model
    model.tflite              the LCE flatbuffer (PaBT/ABC: `pabt.export`; BNNs: LCE)
    results.json              test accuracy, binary MACs/BOPs, sizes, verification, timing

Methods: `pabt` (pruned to a BNN during training), `abc` (ABC-Net 3/3, fixed), `bnn`
(Larq STE), `bnn_bop` (Larq BNN trained with Bop), `float`; see `pabt_tf.models`.
The pruning schedule is given in fractions of the total training steps
(`--prune_begin`, `--prune_end`), so it scales with `--epochs` and `--steps`. Its
defaults (polynomial power 3 from 5 % to 40 % of the steps, soft pruning over 120 steps,
importance momentum 0.99) are the best measured on Fashion-MNIST
(results/fashion_mnist/RECIPE.md).
"""

from __future__ import annotations

import json
import os
import time
from typing import Any

import pabt_tf  # noqa: F401  (Keras 2 before TensorFlow)
import numpy as np
import tensorflow as tf
from absl import app, flags

from pabt_tf.costs import model_costs
from pabt_tf.run.plots import plot_run
from pabt_tf.run.records import write_json
from pabt_tf.run.state import RunLock, RunProgress, backup_callback, finish
from pabt_tf import models as zoo
from pabt_tf.data import CITYSCAPES_IGNORE_LABEL as IGNORE, DATASETS, load_datasets
from pabt_tf.layers import pabt_layers

FLAGS = flags.FLAGS

# Every flag is also a key of the config dict `train()` takes.
DEFAULTS: dict[str, Any] = dict(
    dataset="fashion_mnist",
    data_dir=None,
    model="fmnist_cnn",
    method="pabt",
    epochs=6,
    steps=None,
    batch_size=128,
    learning_rate=2e-3,
    lr_schedule="cosine",
    weight_bases=3,
    activation_bases=3,
    latent_weights=True,
    criterion="taylor",
    importance_momentum=0.99,
    prune_schedule="polynomial",
    prune_begin=0.05,
    prune_end=0.4,
    prune_power=3.0,
    prune_frequency=None,
    target_per_layer=1,
    ranking="global",
    normalization="sum",
    mac_weighted=False,
    decay_steps=120,
    budget=None,
    bop_threshold=1e-8,
    bop_gamma=1e-4,
    validation_size=5000,
    train_limit=None,
    validation_limit=None,
    test_limit=None,
    augment=True,
    seed=0,
    output_dir="runs/run",
    verify_samples=200,
    convert=True,
    save_model=True,
    verbose=2,
    model_kwargs=None,
    data_kwargs=None,
    evaluate_mbn=False,
    distill_weight=0.0,
    distill_temperature=2.0,
)


# One row per flag: (kind, help, extra); the default is always DEFAULTS[name].
_FLAG_SPECS: dict[str, tuple[str, str, dict[str, Any]]] = {
    "dataset": ("enum", "Data set.", {"enum_values": list(DATASETS)}),
    "data_dir": ("string", "tfds data directory (cifar10, imagenet2012, cityscapes) or "
                 "Fashion-MNIST IDX folder (default: Debian's).", {}),
    "model": ("enum", "Zoo model.", {"enum_values": list(zoo.MODELS)}),
    "method": ("enum", "Binarization method.", {"enum_values": list(zoo.METHODS)}),
    "epochs": ("integer", "Training epochs.", {}),
    "steps": ("integer", "Steps per epoch (default: the whole training set).", {}),
    "batch_size": ("integer", "Batch size.", {}),
    "learning_rate": ("float", "Adam learning rate.", {}),
    "lr_schedule": ("enum", "Learning-rate schedule over all training steps.",
                    {"enum_values": ["cosine", "constant"]}),
    "weight_bases": ("integer", "PaBT: M, weight bases per layer.", {"short_name": "M"}),
    "activation_bases": ("integer", "PaBT: N, activation bases per layer.", {"short_name": "N"}),
    "latent_weights": ("boolean", "PaBT: latent weights (Adam, STE) or latent-weight-free ±1 "
                       "kernels trained by Bop.", {}),
    "criterion": ("enum", "Importance.", {"enum_values": ["taylor", "taylor_squared"]}),
    "importance_momentum": ("float", "Importance EMA momentum.", {}),
    "prune_schedule": ("enum", "Pruning schedule shape.",
                       {"enum_values": ["polynomial", "linear", "oneshot"]}),
    "prune_begin": ("float", "First pruning event, fraction of all training steps.", {}),
    "prune_end": ("float", "Last pruning event (network is a BNN), fraction of all steps.", {}),
    "prune_power": ("float", "Polynomial schedule power.", {}),
    "prune_frequency": ("integer", "Steps between pruning events (default: the schedule "
                        "span / 40, at least 1).", {}),
    "target_per_layer": ("integer", "Binary convs each layer ends with (1 = BNN).", {}),
    "ranking": ("enum", "Pruning ranking.", {"enum_values": ["global", "layerwise"]}),
    "normalization": ("enum", "Global ranking: per-layer importance normalisation.",
                      {"enum_values": ["sum", "max", "none"]}),
    "mac_weighted": ("boolean", "Global ranking: weight scores by MACs.", {}),
    "decay_steps": ("integer", "Soft pruning: gate decay steps (0 = hard; at most a tenth of "
                    "all steps).", {}),
    "budget": ("float", "Stop at this mean of binary convs per layer (MBN).", {}),
    "bop_threshold": ("float", "Bop threshold (bnn_bop, latent-free pabt).", {}),
    "bop_gamma": ("float", "Bop adaptivity rate gamma.", {}),
    "validation_size": ("integer", "Examples carved from train for validation (0 = test set).", {}),
    "train_limit": ("integer", "Use only this many training examples.", {}),
    "validation_limit": ("integer", "Use only this many validation examples.", {}),
    "test_limit": ("integer", "Use only this many test examples.", {}),
    "augment": ("boolean", "Training augmentation.", {}),
    "seed": ("integer", "Random seed (init, split, shuffle, augmentation).", {}),
    "output_dir": ("string", "Run directory (a stopped run started again resumes).", {}),
    "verify_samples": ("integer", "Test images for LCE-vs-Keras verification.", {}),
    "convert": ("boolean", "Convert to an LCE flatbuffer and verify it.", {}),
    "save_model": ("boolean", "Save model.keras.", {}),
    "verbose": ("integer", "Keras fit verbosity (1 = progress bars).", {}),
    "model_kwargs": ("json", 'Extra model builder arguments as JSON, e.g. '
                     '\'{"filters": [64, 64, 128, 128]}\'.', {}),
    "data_kwargs": ("json", 'Extra data loader arguments as JSON, e.g. '
                    '\'{"image_size": [256, 512]}\' for cityscapes.', {}),
    "evaluate_mbn": ("boolean", "PaBT: also measure the multi-base network's test accuracy "
                     "just before the first pruning event.", {}),
    "distill_weight": ("float", "PaBT: weight λ of self-distillation from the unpruned "
                       "multi-base network (snapshot at the first pruning event).", {}),
    "distill_temperature": ("float", "PaBT self-distillation temperature.", {}),
}
assert set(_FLAG_SPECS) == set(DEFAULTS), "every config key is a flag, and only those"


def define_flags() -> None:
    """Define the absl flags (idempotent), one per `DEFAULTS` key, with its default."""
    if "method" in FLAGS:
        return
    for name, (kind, help_text, extra) in _FLAG_SPECS.items():
        default = DEFAULTS[name]
        if kind == "json":
            kind, default = "string", None if default is None else json.dumps(default)
        if kind == "enum":
            flags.DEFINE_enum(name, default, extra["enum_values"], help_text)
        else:
            getattr(flags, f"DEFINE_{kind}")(name, default, help_text, **extra)


def config_from_flags() -> dict[str, Any]:
    config = {key: getattr(FLAGS, key) for key in DEFAULTS if key in FLAGS}
    for key, (kind, _, _) in _FLAG_SPECS.items():
        if kind == "json" and config.get(key):
            config[key] = json.loads(config[key])
    return config


class EpochRecorder(tf.keras.callbacks.Callback):
    """Records, per epoch, each PaBT layer's active binary convolutions and the lr.

    List it after the `PaBTPruningCallback`, so it sees the epoch's final masks."""

    def __init__(self):
        super().__init__()
        self.active: list[list[int]] = []
        self.learning_rates: list[float] = []
        self.epoch_seconds: list[float] = []

    def on_train_begin(self, logs=None):
        if hasattr(self, "initial"):  # restored from an earlier piece of this run
            return
        layers = pabt_layers(self.model)
        self.initial = [layer.active_binary_convs for layer in layers]
        self.initial_mean = pabt_tf.mean_binary_convs(self.model) if layers else None

    def state(self) -> dict[str, Any]:
        return {"active": self.active, "learning_rates": self.learning_rates,
                "epoch_seconds": self.epoch_seconds, "initial": self.initial,
                "initial_mean": self.initial_mean}

    def restore(self, state: dict[str, Any], epochs: int) -> None:
        for key in ("active", "learning_rates", "epoch_seconds"):
            setattr(self, key, list(state[key][:epochs]))
        self.initial, self.initial_mean = state["initial"], state["initial_mean"]

    def on_epoch_begin(self, epoch, logs=None):
        self._t = time.time()

    def on_epoch_end(self, epoch, logs=None):
        self.epoch_seconds.append(time.time() - self._t)
        self.active.append([layer.active_binary_convs for layer in pabt_layers(self.model)])
        opt = self.model.optimizer
        inner = getattr(opt, "default", None) or opt  # CaseOptimizer: its default (Adam)
        lr = getattr(inner, "learning_rate", None)
        if isinstance(lr, tf.keras.optimizers.schedules.LearningRateSchedule):
            lr = lr(inner.iterations)
        self.learning_rates.append(None if lr is None else float(tf.keras.backend.get_value(lr)))


class _EventLog:
    """Saves and restores the pruning callback's per-event records across pieces."""

    def __init__(self, pruning):
        self.pruning = pruning

    def state(self) -> list[dict]:
        return list(self.pruning.events)

    def restore(self, state: list[dict], epochs: int) -> None:
        self.pruning.events[:] = state


def accuracy(model: tf.keras.Model, dataset: tf.data.Dataset) -> float:
    """Top-1 accuracy of `model` (inference mode) on a batched `(x, y)` dataset, computed
    without touching the model's compiled metrics (safe inside `fit`)."""
    correct = total = 0
    for x, y in dataset:
        pred = tf.argmax(model(x, training=False), axis=-1, output_type=tf.int32)
        y = tf.cast(y, tf.int32)
        valid = tf.not_equal(y, IGNORE)  # segmentation's ignore label
        correct += int(tf.reduce_sum(tf.cast(tf.equal(pred, y) & valid, tf.int32)))
        total += int(tf.reduce_sum(tf.cast(valid, tf.int32)))
    return correct / max(total, 1)


class EvaluateBeforePruning(tf.keras.callbacks.Callback):
    """Test accuracy of the unpruned multi-base network, measured at the beginning of the
    first pruning event's batch (before the pruning callback acts: list it first)."""

    def __init__(self, step: int, dataset: tf.data.Dataset, steps_per_epoch: int):
        super().__init__()
        self.step, self.dataset, self.steps_per_epoch = step, dataset, steps_per_epoch
        self.accuracy: float | None = None
        self._seen = 0

    def on_train_batch_begin(self, batch, logs=None):
        if self._seen == self.step and self.accuracy is None:
            self.accuracy = accuracy(self.model, self.dataset)
        self._seen += 1

    def state(self) -> dict[str, Any]:
        return {"accuracy": self.accuracy}

    def restore(self, state: dict[str, Any], epochs: int) -> None:
        self.accuracy = state["accuracy"]
        self._seen = epochs * self.steps_per_epoch


def _schedule(config: dict, total_steps: int):
    kind = config["prune_schedule"]
    begin = int(round(config["prune_begin"] * total_steps))
    extra = max(config["decay_steps"] - 1, 0)  # soft pruning clears d - 1 steps after
    end = int(round(config["prune_end"] * total_steps))
    end = min(max(end, begin + 1), total_steps - 1 - extra)
    begin = min(begin, end - 1)
    if begin < 0:
        raise ValueError(
            f"Too few training steps ({total_steps}) for the pruning schedule "
            f"(begin {config['prune_begin']}, end {config['prune_end']})."
        )
    if kind == "oneshot":
        return pabt_tf.schedules.OneShot(end)
    frequency = config["prune_frequency"] or max(1, (end - begin) // 40)
    if kind == "linear":
        return pabt_tf.schedules.LinearDecay(begin, end, frequency=frequency)
    return pabt_tf.schedules.PolynomialDecay(begin, end, config["prune_power"], frequency)


def _loss(config: dict):
    if config["dataset"] == "cityscapes":
        return tf.keras.losses.SparseCategoricalCrossentropy(from_logits=True, ignore_class=IGNORE)
    return tf.keras.losses.SparseCategoricalCrossentropy(from_logits=True)


def _metrics(config: dict, num_classes: int) -> list:
    if config["dataset"] == "cityscapes":
        # Pixel accuracy and mean IoU over the labelled pixels (IGNORE = unlabelled).
        return [
            PixelAccuracy(name="accuracy"),
            tf.keras.metrics.MeanIoU(num_classes, name="mean_iou", sparse_y_pred=False, ignore_class=IGNORE),
        ]
    return ["accuracy"]


class PixelAccuracy(tf.keras.metrics.Mean):
    """Top-1 accuracy over the pixels whose label is not Cityscapes' ignore label."""

    def update_state(self, y_true, y_pred, sample_weight=None):
        y_true = tf.cast(y_true, tf.int32)
        if y_true.shape.rank == y_pred.shape.rank:
            y_true = tf.squeeze(y_true, -1)
        pred = tf.argmax(y_pred, axis=-1, output_type=tf.int32)
        valid = tf.cast(tf.not_equal(y_true, IGNORE), tf.float32)
        correct = tf.cast(tf.equal(pred, y_true), tf.float32)
        return super().update_state(correct, sample_weight=valid)


def _verification_data(ds: tf.data.Dataset, n: int) -> tuple[np.ndarray, np.ndarray]:
    pairs = [(x.numpy(), y.numpy()) for x, y in ds.unbatch().take(n)]
    return np.stack([p[0] for p in pairs]).astype(np.float32), np.stack([p[1] for p in pairs])


def flatbuffer_accuracy(flatbuffer: bytes, images: np.ndarray, labels: np.ndarray) -> float:
    """Top-1 accuracy of the flatbuffer run by LCE's interpreter."""
    from larq_compute_engine.tflite.python.interpreter import Interpreter

    from pabt_tf.export import default_indirect_bgemm

    interpreter = Interpreter(flatbuffer, num_threads=1, use_indirect_bgemm=default_indirect_bgemm())
    out = np.asarray(interpreter.predict(images))
    return float(np.mean(out.reshape(len(images), -1).argmax(-1) == labels.reshape(len(images))))


def _convert(model, method: str, inputs: np.ndarray) -> dict[str, Any]:
    """Flatbuffer + operator counts + LCE-vs-Keras verification."""
    from pabt_tf import export

    if method in ("pabt", "abc"):
        report = export.convert_with_report(model, inputs, strict=False)
        flatbuffer, verification = report.flatbuffer, report.verification
        info = {
            "op_counts": report.op_counts,
            "expected_bconvs": report.expected_bconvs,
            "found_bconvs": report.found_bconvs,
            "problems": report.problems,
        }
    else:  # Larq / Keras models: LCE directly
        import larq_compute_engine as lce

        flatbuffer = lce.convert_keras_model(model)
        verification = export.verify(model, flatbuffer, inputs)
        counts = export.operator_counts(flatbuffer)
        info = {"op_counts": counts, "found_bconvs": int(counts.get("LceBconv2d", 0))}
    info["flatbuffer"] = flatbuffer
    info["verification"] = {
        "ok": verification.ok,
        "samples": verification.samples,
        "max_abs_diff": verification.max_abs_diff,
        "mean_abs_diff": verification.mean_abs_diff,
        "top1_agreement": verification.top1_agreement,
        "interpreter": verification.interpreter,
    }
    return info


def convert_run(model, config: dict[str, Any], test: tf.data.Dataset, out: str) -> dict[str, Any]:
    """Convert and verify a trained run's model; write `out/model.tflite`.

    # Returns
        The results' conversion entries (operator counts, verification, flatbuffer size
        and accuracy), or `{"convert_error": ...}`: a failed conversion is reported in
        the run's results, it does not lose the trained run.
    """
    try:
        inputs, labels = _verification_data(test, config["verify_samples"])
        info = _convert(model, config["method"], inputs)
        if config["dataset"] != "cityscapes":  # classification only
            info["flatbuffer_accuracy"] = flatbuffer_accuracy(info["flatbuffer"], inputs, labels)
            info["keras_accuracy_on_verify_samples"] = accuracy(
                model, tf.data.Dataset.from_tensor_slices((inputs, labels)).batch(64))
        info["verify_samples"] = len(inputs)
        path = os.path.join(out, "model.tflite")
        with open(path, "wb") as f:
            f.write(info.pop("flatbuffer"))
        info["tflite"] = path
        info["flatbuffer_bytes"] = os.path.getsize(path)
        return info
    except Exception as err:
        return {"convert_error": f"{type(err).__name__}: {err}"}


def reconvert(run_dir: str) -> dict[str, Any]:
    """Convert a finished run again from its saved `model.keras` (e.g. its conversion
    failed); update and return its `results.json`.

    The previous error, if any, is kept as `earlier_convert_error`.

    # Raises
        FileNotFoundError: the run has no `results.json` or no `model.keras`.
        RuntimeError: another live process is using the run directory.
    """
    results_path = os.path.join(run_dir, "results.json")
    model_path = os.path.join(run_dir, "model.keras")
    for path in (results_path, model_path):
        if not os.path.exists(path):
            raise FileNotFoundError(f"cannot reconvert {run_dir}: no {os.path.basename(path)}")
    with RunLock(run_dir):
        return _reconvert(run_dir, results_path, model_path)


def _reconvert(run_dir: str, results_path: str, model_path: str) -> dict[str, Any]:
    with open(results_path) as f:
        results = json.load(f)
    config = {**DEFAULTS, **results["config"]}
    tf.keras.backend.clear_session()
    model = tf.keras.models.load_model(model_path, compile=False)  # our own file
    ds = _datasets(config)
    info = convert_run(model, config, ds.test, run_dir)
    if "convert_error" in results:
        results["earlier_convert_error"] = results.pop("convert_error")
    results.update(info)
    write_json(results_path, results)
    return results


def _datasets(config: dict[str, Any]):
    """The run's data sets, as its config describes them."""
    return load_datasets(
        config["dataset"],
        data_dir=config["data_dir"],
        batch_size=config["batch_size"],
        validation_size=config["validation_size"],
        augment=config["augment"],
        seed=config["seed"],
        train_limit=config["train_limit"],
        validation_limit=config["validation_limit"],
        test_limit=config["test_limit"],
        **(config["data_kwargs"] or {}),
    )


def build(config: dict, input_shape, num_classes) -> tf.keras.Model:
    """The zoo model of `config` (its method's layers), built."""
    kwargs = dict(
        input_shape=tuple(input_shape),
        num_classes=num_classes,
        weight_bases=config["weight_bases"],
        activation_bases=config["activation_bases"],
        latent_weights=config["latent_weights"],
        **(config.get("model_kwargs") or {}),
    )
    if config["method"] == "pabt":
        kwargs.update(criterion=config["criterion"], importance_momentum=config["importance_momentum"])
    return zoo.build_model(config["model"], config["method"], **kwargs)


def train(config: dict[str, Any], extra_callbacks=()) -> dict[str, Any]:
    """Train, evaluate, convert; write the run directory; return the results dict.

    # Arguments
        config: keys of `DEFAULTS` (missing ones take the defaults).
        extra_callbacks: more Keras callbacks for `fit`.

    # Raises
        ValueError: on unknown config keys, or a run directory holding a run with
            another configuration.
        RuntimeError: another live process is training in the same run directory.
    """
    config = {**DEFAULTS, **config}
    unknown = set(config) - set(DEFAULTS)
    if unknown:
        raise ValueError(f"Unknown config keys {sorted(unknown)}.")
    with RunLock(os.path.abspath(config["output_dir"])):
        return _train(config, extra_callbacks)


def _train(config: dict[str, Any], extra_callbacks) -> dict[str, Any]:
    run_config = dict(config)  # as asked for; a resumed run must ask for the same
    method = config["method"]
    out = os.path.abspath(config["output_dir"])
    os.makedirs(out, exist_ok=True)
    tf.keras.backend.clear_session()
    tf.keras.utils.set_random_seed(config["seed"])

    ds = _datasets(config)
    steps = config["steps"] or ds.steps_per_epoch
    train_data = ds.train.repeat() if config["steps"] else ds.train
    total_steps = steps * config["epochs"]

    model = build(config, ds.input_shape, ds.num_classes)
    distill = method == "pabt" and config["distill_weight"] > 0
    if distill:
        from pabt_tf.run.distill import with_self_distillation

        model = with_self_distillation(model, config["distill_weight"], config["distill_temperature"])
    lr = config["learning_rate"]
    if config["lr_schedule"] == "cosine":
        lr = tf.keras.optimizers.schedules.CosineDecay(lr, total_steps)
    optimizer = zoo.get_optimizer(
        method, lr, config["latent_weights"], config["bop_threshold"], config["bop_gamma"]
    )
    model.compile(optimizer, _loss(config), metrics=_metrics(config, ds.num_classes))

    tb_dir = os.path.join(out, "tensorboard")
    callbacks: list[tf.keras.callbacks.Callback] = []
    pruning = None
    mbn = None
    if method == "pabt":
        # Soft pruning takes at most a tenth of the run (short runs prune hard).
        config["decay_steps"] = min(config["decay_steps"], total_steps // 10)
        schedule = _schedule(config, total_steps)
        if config["evaluate_mbn"]:
            mbn = EvaluateBeforePruning(schedule.begin_step, ds.test, steps)
            callbacks.append(mbn)
        if distill:
            from pabt_tf.run.distill import TeacherSnapshot

            # The teacher is saved in the run, so a resumed run distils from the same one.
            teacher_path = os.path.join(out, "teacher", "weights")
            callbacks.append(TeacherSnapshot(schedule.begin_step, teacher_path))
        pruning = pabt_tf.PaBTPruningCallback(
            schedule,
            target_per_layer=config["target_per_layer"],
            ranking=config["ranking"],
            log_dir=tb_dir,
            normalization=config["normalization"],
            mac_weighted=config["mac_weighted"],
            decay_steps=config["decay_steps"],
            budget=config["budget"],
        )
        callbacks.append(pruning)
    recorder = EpochRecorder()
    recorders: dict[str, Any] = {"epochs": recorder}
    if mbn is not None:
        recorders["mbn"] = mbn
    if pruning is not None:
        recorders["pruning"] = _EventLog(pruning)
    progress = RunProgress(out, run_config, recorders)
    if progress.resumed:
        progress.restore_recorders()
        print(f"Resuming {out} after epoch {progress.state['epochs_done']}", flush=True)
    callbacks += [
        recorder,
        tf.keras.callbacks.TensorBoard(tb_dir, write_graph=False, profile_batch=0),
        tf.keras.callbacks.ModelCheckpoint(
            os.path.join(out, "checkpoints", "epoch_{epoch:03d}"), save_weights_only=True
        ),
        progress,  # before the backup: see RunProgress
        backup_callback(out),
    ]
    callbacks += list(extra_callbacks)
    model.fit(
        train_data,
        epochs=config["epochs"],
        steps_per_epoch=steps,
        validation_data=ds.validation,
        callbacks=callbacks,
        verbose=config["verbose"],
    )
    train_seconds = progress.train_seconds
    test = model.evaluate(ds.test, verbose=0, return_dict=True)
    if distill:  # a plain PaBTModel on the same layers, for saving and export
        model = pabt_tf.PaBTModel.from_functional(
            model, criterion=model.criterion, importance_momentum=model.importance_momentum)

    layers = pabt_layers(model)
    hist = {key: list(values) for key, values in progress.state["history"].items()}
    hist["epoch"] = list(range(progress.state["epochs_done"]))
    hist["pieces"] = progress.state["pieces"]
    hist["epoch_seconds"] = recorder.epoch_seconds
    hist["learning_rate"] = recorder.learning_rates
    if layers:
        hist["layer_names"] = [layer.name for layer in layers]
        hist["active_per_layer"] = recorder.active
        hist["initial_active"] = recorder.initial
        hist["initial_mean_binary_convs"] = recorder.initial_mean
        hist["final_masks"] = [layer.binary_conv_mask.astype(int) for layer in layers]
        hist["final_importance"] = [layer.importance for layer in layers]
        if pruning is not None:
            hist["pruning_events"] = pruning.events
            hist["schedule"] = tf.keras.utils.serialize_keras_object(pruning.schedule)
    write_json(os.path.join(out, "history.json"), hist)
    title = f"{config['model']} / {method} / seed {config['seed']}"
    plot_path = plot_run(hist, os.path.join(out, "pruning.png"), title)

    results: dict[str, Any] = {
        "config": config,
        "test_accuracy": float(test.get("accuracy", np.nan)),
        "test_loss": float(test["loss"]),
        "test_mean_iou": float(test["mean_iou"]) if "mean_iou" in test else None,
        "val_accuracy": hist.get("val_accuracy", [None])[-1],
        "train_accuracy": hist.get("accuracy", [None])[-1],
        "mean_binary_convs": pabt_tf.mean_binary_convs(model) if layers else None,
        "mbn_test_accuracy": None if mbn is None else mbn.accuracy,
        "unpruned_binary_macs": sum(l.num_binary_convs * l.binary_conv_macs() for l in layers)
        if layers else None,
        "active_binary_convs": [layer.active_binary_convs for layer in layers] or None,
        "train_seconds": train_seconds,
        "seconds_per_epoch": train_seconds / max(config["epochs"], 1),
        "steps_per_epoch": steps,
        "total_steps": total_steps,
        "pruning_schedule": None if pruning is None else pruning.schedule.get_config(),
        "train_size": ds.train_size,
        "test_size": ds.test_size,
        "plot": plot_path,
        **model_costs(model),
    }
    if config["save_model"]:
        path = os.path.join(out, "model.keras")
        try:
            model.save(path)
            results["keras_file_bytes"] = os.path.getsize(path)
        except Exception as err:  # report, do not lose the run
            results["keras_save_error"] = f"{type(err).__name__}: {err}"
    if config["convert"]:
        results.update(convert_run(model, config, ds.test, out))
    write_json(os.path.join(out, "results.json"), results)
    finish(out)
    return results


def main(argv):
    del argv
    results = train(config_from_flags())
    summary = {k: results.get(k) for k in (
        "test_accuracy", "mean_binary_convs", "binary_macs", "float_macs", "flatbuffer_bytes",
        "keras_file_bytes", "train_seconds")}
    summary["verified"] = results.get("verification", {}).get("ok")
    print("RESULTS", summary, flush=True)
    return 0


if __name__ == "__main__":
    define_flags()
    app.run(main)
