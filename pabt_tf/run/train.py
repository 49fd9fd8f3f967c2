"""Train one model of the zoo with one method, convert it, and write a run directory:
`train(config)`, whose keys and defaults are `DEFAULTS`. From a checkout the program
`python -m experiments.train` takes the configuration from flags:

    python -m experiments.train --dataset fashion_mnist --model fmnist_cnn --method pabt \\
        --epochs 6 --output_dir runs/fmnist_pabt_s0

The run directory gets:

    checkpoints/epoch_XXX.*   weights after every epoch (TF checkpoint format)
    tensorboard/              Keras scalars (+ pabt/: mean binary convs, active convs per
                              layer, importance histograms)
    history.json              per-epoch metrics, active binary convs per layer, masks,
                              pruning events
    pruning.png               pruning trajectory: mean binary convs at every pruning event
                              and validation accuracy per epoch, per-layer heatmap of
                              surviving binary convs, each layer's final mask
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

import os
from typing import Any

import pabt_tf  # noqa: F401  (Keras 2 before TensorFlow)

# isort: split
import numpy as np
import tensorflow as tf

from pabt_tf import models as zoo
from pabt_tf._atomic import atomic_path
from pabt_tf.costs import model_costs
from pabt_tf.data import load_datasets
from pabt_tf.layers import pabt_layers
from pabt_tf.run.evaluation import (
    CONVERSION_KEYS,
    convert_run,
    loss_for,
    metrics_for,
    segmentation_results,
)
from pabt_tf.run.latency import latency_results, latency_target
from pabt_tf.run.plots import plot_run
from pabt_tf.run.recorders import EpochRecorder, EvaluateBeforePruning, EventLog
from pabt_tf.run.records import code_version, write_json
from pabt_tf.run.state import (
    PROGRESS,
    RunLock,
    RunProgress,
    backup_callback,
    check_finished_run,
    data_record,
    finish,
    finished_results,
    read_progress,
    reset,
)

__all__ = ["DEFAULTS", "train", "reconvert", "build"]


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
    prune_order="convolution",
    target_per_layer=1,
    ranking="global",
    normalization="sum",
    mac_weighted=False,
    decay_steps=120,
    budget=None,
    bop_threshold=1e-8,
    bop_gamma=1e-4,
    bop_schedule="constant",
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
    bn_recalibration_batches=0,
    latency_budget_ms=None,
    latency_budget_x_bnn=None,
    latency_table=None,
)


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


BOP_SCHEDULES = ("constant", "cosine")


def _bop_gamma(config: dict, total_steps: int):
    """Bop's adaptivity rate: constant, or cosine-decayed to 0 over the run like the
    learning rate (as gamma falls, the gradient average freezes and flips settle)."""
    if config["bop_schedule"] not in BOP_SCHEDULES:
        raise ValueError(f"`bop_schedule` must be one of {BOP_SCHEDULES}, got {config['bop_schedule']!r}.")
    if config["bop_schedule"] == "cosine":
        return tf.keras.optimizers.schedules.CosineDecay(config["bop_gamma"], total_steps)
    return config["bop_gamma"]


def reconvert(run_dir: str) -> dict[str, Any]:
    """Convert a finished run again from its saved `model.keras` (e.g. its conversion
    failed); update and return its `results.json`.

    A conversion that succeeds replaces `model.tflite` and every conversion entry of the
    results (`CONVERSION_KEYS`); the previous error, if any, is kept as
    `earlier_convert_error`. One that fails (including writing `model.tflite`: disk
    full, file-size limit) leaves the files and the entries of an earlier good
    conversion as they were and records `reconvert_error`, or, if there was none,
    `convert_error`.

    # Raises
        FileNotFoundError: the run has no `results.json` or no `model.keras`.
        RunDirectoryError: another live process is using the run directory.
    """
    results_path = os.path.join(run_dir, "results.json")
    model_path = os.path.join(run_dir, "model.keras")
    for path in (results_path, model_path):
        if not os.path.exists(path):
            raise FileNotFoundError(f"cannot reconvert {run_dir}: no {os.path.basename(path)}")
    with RunLock(run_dir):
        return _reconvert(run_dir, results_path, model_path)


def _reconvert(run_dir: str, results_path: str, model_path: str) -> dict[str, Any]:
    results = finished_results(run_dir)
    config = {**DEFAULTS, **results["config"]}
    tf.keras.backend.clear_session()
    model = tf.keras.models.load_model(model_path, compile=False)  # our own file
    ds = _datasets(config)
    info = convert_run(model, config, ds.test, run_dir, ds.ignore_label)
    had_flatbuffer = "convert_error" not in results and os.path.exists(
        os.path.join(run_dir, "model.tflite"))
    if "convert_error" in info:
        if had_flatbuffer:  # the earlier file is intact: its entries still describe it
            results["reconvert_error"] = info["convert_error"]
        else:
            results["convert_error"] = info["convert_error"]
    else:
        if "convert_error" in results:
            results["earlier_convert_error"] = results.pop("convert_error")
        for key in (*CONVERSION_KEYS, "reconvert_error"):
            results.pop(key, None)
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


def train(config: dict[str, Any], extra_callbacks=(), force: bool = False) -> dict[str, Any]:
    """Train, evaluate, convert; write the run directory; return the results dict.

    A run directory holding a stopped run of the same configuration and data resumes it;
    one holding that run finished returns its results without training (with
    `"reused": True`), unless `force`.

    # Arguments
        config: keys of `DEFAULTS` (missing ones take the defaults).
        extra_callbacks: more Keras callbacks for `fit`.
        force: train afresh: once the data and model are checked, delete what an earlier
            run wrote into the directory (`pabt_tf.run.state.reset`; other files stay).

    # Raises
        ValueError: on unknown config keys or bad data arguments, a data set of fewer
            than two classes.
        pabt_tf.run.state.RunMismatchError: (a `ValueError`) the run directory holds a
            run with another configuration or other data (names what changed).
        pabt_tf.run.state.RunDirectoryError: another live process is training in the
            same run directory; a record of finished epochs without their checkpoint;
            a malformed record.
    """
    config = {**DEFAULTS, **config}
    unknown = set(config) - set(DEFAULTS)
    if unknown:
        raise ValueError(f"Unknown config keys {sorted(unknown)}.")
    _check_counts(config)
    with RunLock(os.path.abspath(config["output_dir"])):
        return _train(config, extra_callbacks, force)


def _check_counts(config: dict[str, Any]) -> None:
    """The run's counts are integers in range, checked before the run directory is used."""
    for key, minimum, optional in (("epochs", 1, False), ("steps", 1, True),
                                   ("verify_samples", 0, False), ("bn_recalibration_batches", 0, False)):  # fmt: skip
        value = config[key]
        if optional and value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
            raise ValueError(f"`{key}` must be an integer >= {minimum}"
                             + (" or None" if optional else "") + f", got {value!r}.")


def _train(config: dict[str, Any], extra_callbacks, force: bool = False) -> dict[str, Any]:
    run_config = dict(config)  # as asked for; a resumed run must ask for the same
    method = config["method"]
    out = os.path.abspath(config["output_dir"])
    os.makedirs(out, exist_ok=True)
    tf.keras.backend.clear_session()
    tf.keras.utils.set_random_seed(config["seed"])

    finished = None if force else finished_results(out)
    if not force and os.path.exists(os.path.join(out, PROGRESS)):
        read_progress(os.path.join(out, PROGRESS))  # a malformed record: named before any work
    ds = _datasets(config)
    if ds.num_classes < 2:
        raise ValueError(
            f"The {config['dataset']} data has {ds.num_classes} class(es) "
            f"{list(ds.classes)}; a classifier needs at least 2."
        )
    data = data_record(ds)
    if finished is not None:
        check_finished_run(out, run_config, data, finished)
        print(f"{out} holds this run, finished (its results.json); not training it again. "
              "To train it over: force=True (--force), or another output directory.",
              flush=True)
        return {**finished, "reused": True}
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
        method, lr, config["latent_weights"], config["bop_threshold"], _bop_gamma(config, total_steps)
    )
    model.compile(optimizer, loss_for(ds), metrics=metrics_for(ds))
    if force:  # everything is checked: only now does the earlier run go
        reset(out)

    tb_dir = os.path.join(out, "tensorboard")
    callbacks: list[tf.keras.callbacks.Callback] = []
    pruning = None
    mbn = None
    if method == "pabt":
        # Soft pruning takes at most a tenth of the run (short runs prune hard).
        config["decay_steps"] = min(config["decay_steps"], total_steps // 10)
        schedule = _schedule(config, total_steps)
        if config["evaluate_mbn"]:
            mbn = EvaluateBeforePruning(schedule.begin_step, ds.test, steps, ds.ignore_label)
            callbacks.append(mbn)
        if distill:
            from pabt_tf.run.distill import TeacherSnapshot

            # The teacher is saved in the run, so a resumed run distils from the same one.
            teacher_path = os.path.join(out, "teacher", "weights")
            callbacks.append(TeacherSnapshot(schedule.begin_step, teacher_path))
        latency = latency_target(config, model, out)  # issue 28: {} without a target
        pruning = pabt_tf.PaBTPruningCallback(
            schedule,
            target_per_layer=config["target_per_layer"],
            ranking=config["ranking"],
            log_dir=tb_dir,
            normalization=config["normalization"],
            mac_weighted=config["mac_weighted"],
            decay_steps=config["decay_steps"],
            budget=config["budget"],
            order=config["prune_order"],
            **latency,
        )
        callbacks.append(pruning)
    recorder = EpochRecorder()
    recorders: dict[str, Any] = {"epochs": recorder}
    if mbn is not None:
        recorders["mbn"] = mbn
    if pruning is not None:
        recorders["pruning"] = EventLog(pruning)
    progress = RunProgress(out, run_config, recorders, data)
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
    if config["bn_recalibration_batches"]:
        # Before every validation and at the end: batch-norm statistics of the current
        # weights, not of the last batches' (pabt_tf.batch_norm says why).
        from pabt_tf.batch_norm import BatchNormRecalibration

        callbacks.insert(0, BatchNormRecalibration(ds.train, config["bn_recalibration_batches"]))
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
    folded = None
    if config["bn_recalibration_batches"]:
        # Dead channels (a constant binary-convolution output) into their constant: LCE's
        # fused batch norm would round them across the next sign (pabt_tf.batch_norm).
        from pabt_tf.batch_norm import fold_constant_channels

        folded = fold_constant_channels(model, ds.train, config["bn_recalibration_batches"])
    test = model.evaluate(ds.test, verbose=0, return_dict=True)
    if distill:  # a plain PaBTModel on the same layers, for saving and export
        model = pabt_tf.PaBTModel.from_functional(
            model, criterion=model.criterion, importance_momentum=model.importance_momentum)

    layers = pabt_layers(model)
    hist = {key: list(values) for key, values in progress.state["history"].items()}
    hist["epoch"] = list(range(progress.state["epochs_done"]))
    hist["pieces"] = progress.state["pieces"]
    hist["steps_per_epoch"] = steps
    hist["epoch_seconds"] = recorder.epoch_seconds
    hist["learning_rate"] = recorder.learning_rates
    if layers:
        hist["layer_names"] = [layer.name for layer in layers]
        hist["binary_conv_macs"] = [layer.binary_conv_macs() for layer in layers]
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
        "task": ds.task,
        "test_mean_iou": float(test["mean_iou"]) if "mean_iou" in test else None,
        "val_miou": hist.get("val_mean_iou", [None])[-1],
        "val_accuracy": hist.get("val_accuracy", [None])[-1],
        "train_accuracy": hist.get("accuracy", [None])[-1],
        "mean_binary_convs": pabt_tf.mean_binary_convs(model) if layers else None,
        "mbn_test_accuracy": None if mbn is None else mbn.accuracy,
        "unpruned_binary_macs": sum(layer.num_binary_convs * layer.binary_conv_macs() for layer in layers)
        if layers else None,
        "active_binary_convs": [layer.active_binary_convs for layer in layers] or None,
        "train_seconds": train_seconds,
        "seconds_per_epoch": train_seconds / max(config["epochs"], 1),
        "steps_per_epoch": steps,
        "total_steps": total_steps,
        "pruning_schedule": None if pruning is None else pruning.schedule.get_config(),
        "train_size": ds.train_size,
        "test_size": ds.test_size,
        "normalization": None if ds.mean is None else {"mean": ds.mean, "std": ds.std},
        "data": data,
        "constant_channels_folded": folded,
        "code": code_version(),
        "plot": plot_path,
        **model_costs(model),
    }
    if ds.task == "segmentation":
        results.update(segmentation_results(model, ds))
    if config["save_model"]:
        path = os.path.join(out, "model.keras")
        try:
            with atomic_path(path) as tmp:  # a failed save keeps no half-written file
                model.save(tmp)
            results["keras_file_bytes"] = os.path.getsize(path)
        except Exception as err:  # report, do not lose the run
            results["keras_save_error"] = f"{type(err).__name__}: {err}"
    if config["convert"]:
        results.update(convert_run(model, config, ds.test, out, ds.ignore_label))
    if pruning is not None and pruning.latency_table is not None:  # issue 28: measured
        results.update(latency_results(model, pruning, results.get("tflite")))
    write_json(os.path.join(out, "results.json"), results)
    finish(out)
    return results
