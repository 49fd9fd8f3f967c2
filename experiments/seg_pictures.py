r"""A picture of segmentation runs side by side: for a few test images, the image, its
ground truth and each run's prediction in the data set's class colours (CamVid: SegNet's
palette; ignored pixels black), at the labels' original resolution (logits upsampled
bilinearly, as the benchmark's mIoU is computed).

    python -m experiments.seg_pictures --runs results/camvid/compare/baselines/runs/float_s3,... \
        --labels "full precision,Bi-Real-style BNN,PaBT → BNN" --images 0,57,120,199 \
        --output results/camvid/pictures.png

Each run is read from its directory: `results.json` (the data set it was trained on) and
`model.keras` (loaded without custom objects beyond pabt_tf's and Larq's, compile=False).
"""

from __future__ import annotations

import os

import pabt_tf  # noqa: F401  (Keras 2 before TensorFlow)

# isort: split
import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
from absl import app, flags  # noqa: E402

from experiments.common import read_json  # noqa: E402
from pabt_tf._atomic import atomic_path  # noqa: E402
from pabt_tf.data import load_datasets  # noqa: E402

FLAGS = flags.FLAGS


def define_flags() -> None:
    flags.DEFINE_list("runs", [], "Run directories (with results.json and model.keras).")
    flags.DEFINE_list("labels", [], "A column title per run (default: the run's method).")
    flags.DEFINE_list("images", ["0", "1", "2"], "Indices of test images to show.")
    flags.DEFINE_string("output", "pictures.png", "PNG to write.")


def colorize(label: np.ndarray, colors, ignore_label: int | None) -> np.ndarray:
    """Class ids -> RGB uint8 (labels outside the palette, e.g. the ignore label: black)."""
    palette = np.zeros((256, 3), np.uint8)
    palette[: len(colors)] = np.asarray(colors, np.uint8)
    out = palette[np.clip(label, 0, 255)]
    if ignore_label is not None:
        out[label == ignore_label] = 0
    return out


def _data_of(result: dict):
    config = result["config"]
    return load_datasets(config["dataset"], data_dir=config["data_dir"], batch_size=8,
                         validation_size=config["validation_size"], augment=False,
                         seed=config["seed"], **(config.get("data_kwargs") or {}))


def picture(runs: list[str], labels: list[str], images: list[int], output: str) -> str:
    """Write the picture; returns its path.

    # Raises
        ValueError: runs trained on different data, no runs, an image index out of range,
            or a data set without test labels at one resolution or without colours.
    """
    if not runs:
        raise ValueError("`runs` is empty: give at least one run directory.")
    results = [read_json(os.path.join(r, "results.json")) for r in runs]
    keys = ("dataset", "data_dir", "data_kwargs")
    if len({tuple(str(r["config"].get(k)) for k in keys) for r in results}) > 1:
        raise ValueError("the runs were trained on different data; a picture of them compares nothing.")
    ds = _data_of(results[0])
    if ds.test_full is None or ds.colors is None:
        raise ValueError(f"{ds.name}: needs test labels of one size and class colours for a picture.")
    x_model, y_full = [np.concatenate(a) for a in zip(*[(x.numpy(), y.numpy()) for x, y in ds.test_full])]
    if any(not 0 <= i < len(x_model) for i in images):
        raise ValueError(f"`images` must be indices in [0, {len(x_model)}), got {images}.")
    x_model, y_full = x_model[images], y_full[images]
    shown = np.clip(x_model * np.asarray(ds.std) + np.asarray(ds.mean), 0, 1)
    shown = tf.image.resize(shown, ds.full_size, method="bilinear").numpy()
    predictions = []
    for run in runs:
        model = tf.keras.models.load_model(os.path.join(run, "model.keras"), compile=False)
        logits = tf.image.resize(model(x_model, training=False), ds.full_size, method="bilinear")
        predictions.append(tf.argmax(logits, -1).numpy())
        tf.keras.backend.clear_session()
    labels = labels or [r["config"]["method"] for r in results]
    columns = ["image", "ground truth", *labels]
    fig, axes = plt.subplots(len(images), len(columns), figsize=(2.6 * len(columns), 2.0 * len(images)),
                             squeeze=False)
    for i in range(len(images)):
        panels = [shown[i], colorize(y_full[i], ds.colors, ds.ignore_label)]
        panels += [colorize(p[i], ds.colors, None) for p in predictions]
        for j, panel in enumerate(panels):
            ax = axes[i, j]
            ax.imshow(panel)
            ax.set_xticks([])
            ax.set_yticks([])
            if i == 0:
                ax.set_title(columns[j], fontsize=9)
    handles = [matplotlib.patches.Patch(color=np.asarray(c) / 255, label=n)
               for c, n in zip(ds.colors, ds.classes)]
    fig.legend(handles=handles, loc="lower center", ncol=min(len(handles), 11), fontsize=7, frameon=False)
    fig.tight_layout(rect=(0, 0.05, 1, 1))
    os.makedirs(os.path.dirname(os.path.abspath(output)), exist_ok=True)
    with atomic_path(output) as tmp:  # a failed write leaves an earlier picture intact
        fig.savefig(tmp, dpi=100, format="png")
    plt.close(fig)
    return output


def main(argv):
    del argv
    print(picture(FLAGS.runs, FLAGS.labels, [int(i) for i in FLAGS.images], FLAGS.output))
    return 0


if __name__ == "__main__":
    define_flags()
    app.run(main)
