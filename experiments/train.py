"""`python -m experiments.train`: one training run from absl flags (`pabt_tf.run.train`).

    python -m experiments.train --dataset fashion_mnist --model fmnist_cnn --method pabt \\
        --epochs 6 --output_dir runs/fmnist_pabt_s0

Every flag is a key of the run's configuration (`pabt_tf.run.train.DEFAULTS`, whose
defaults it takes); see `pabt_tf.run.train` for what the run directory gets. Besides
them, `--force` trains afresh into an `--output_dir` holding an earlier run (finished,
stopped, or from another configuration): it deletes that run's files first. Without it a
stopped run of the same configuration and data resumes and a finished one is reported,
not trained again.

Exit status: 0 done; 1 the conversion failed or its check did (recorded in
results.json); 2 bad arguments or a run directory that cannot be used (the message says
why and what to do).
"""

from __future__ import annotations

import json
import sys
from typing import Any

import pabt_tf  # noqa: F401  (Keras 2 before TensorFlow)

# isort: split
from absl import app, flags

from pabt_tf import models as zoo
from pabt_tf.data import DATASETS
from pabt_tf.run.evaluation import conversion_failed
from pabt_tf.run.state import RunDirectoryError
from pabt_tf.run.train import DEFAULTS, _schedule, build, reconvert, train  # noqa: F401

FLAGS = flags.FLAGS

# One row per flag: (kind, help, extra); the default is always DEFAULTS[name].
_FLAG_SPECS: dict[str, tuple[str, str, dict[str, Any]]] = {
    "dataset": ("enum", "Data set.", {"enum_values": list(DATASETS)}),
    "data_dir": ("string", "Data folder: Fashion-MNIST IDX files (default: Debian's); "
                 "cifar10: class folders, cifar-10-batches-py pickles or a tfds directory; "
                 "image_folder: train/<class>/*, test/<class>/*; imagenet2012, cityscapes: "
                 "a tfds directory.", {}),
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
    "prune_order": ("enum", "Which binary convs of a layer may go next: any by rank, or "
                    "those of one activation base until it is empty.",
                    {"enum_values": ["convolution", "activation_bases"]}),
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
    "bop_schedule": ("enum", "Bop's gamma over the run: constant, or cosine-decayed to 0 like "
                     "the learning rate.", {"enum_values": ["constant", "cosine"]}),
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
    "bn_recalibration_batches": ("integer", "Re-estimate batch-norm statistics on this many "
                                 "training batches with the weights fixed, before every "
                                 "validation and at the end (0 = off).", {}),
    "latency_budget_ms": ("float", "PaBT: prune to this predicted LCE latency (ms) instead "
                          "of to a BNN (needs a latency table: --latency_table, else measured "
                          "on this host at the start and saved in the run directory).", {}),
    "latency_budget_x_bnn": ("float", "PaBT: latency target as a multiple of the PaBT BNN's "
                             "measured LCE latency (the table's bnn_ms), e.g. 1.5.", {}),
    "latency_table": ("string", "LatencyTable JSON for --latency_budget_ms / "
                      "--latency_budget_x_bnn (default: measured at the start of the run).", {}),
}
assert set(_FLAG_SPECS) == set(DEFAULTS), "every config key is a flag, and only those"


def define_flags() -> None:
    """Define the absl flags (idempotent), one per `DEFAULTS` key, with its default, and
    `--force`."""
    if "method" in FLAGS:
        return
    flags.DEFINE_boolean("force", False, "Train afresh into an output_dir that holds an "
                         "earlier run (finished, stopped or of another configuration): "
                         "its files are deleted first (other files stay).")
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


def main(argv):
    del argv
    try:
        results = train(config_from_flags(), force=FLAGS.force)
    except (RunDirectoryError, ValueError, FileNotFoundError) as err:
        print(f"error: {err}", file=sys.stderr, flush=True)
        return 2
    summary = {k: results.get(k) for k in (
        "test_accuracy", "mean_binary_convs", "binary_macs", "float_macs", "flatbuffer_bytes",
        "keras_file_bytes", "train_seconds")}
    summary["verified"] = (results.get("verification") or {}).get("ok")
    print("RESULTS", summary, flush=True)
    failed = conversion_failed(results) if results["config"].get("convert") else None
    if failed:
        print(f"error: {failed} (recorded in results.json; "
              "pabt_tf.run.train.reconvert(run_dir) converts it again)", file=sys.stderr, flush=True)
        return 1
    return 0


if __name__ == "__main__":
    define_flags()
    app.run(main)
