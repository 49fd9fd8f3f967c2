"""`pabt-convert`: a trained PaBT model (.keras / .h5 / SavedModel) → verified LCE flatbuffer.

    pabt-convert MODEL OUT.tflite [--verify-samples N] [--require-bnn] [--target arm|xcore]

Strips the PaBT layers (`pabt_tf.strip_pabt`), converts with Larq Compute Engine, checks
that every active binary convolution became an `LceBconv2d`, and compares LCE's
interpreter with Keras on real Fashion-MNIST test images when the model takes 28×28×1
inputs (random N(0, 1) inputs of the model's input shape otherwise). Prints the operator
table, sizes and the verification; writes OUT only if every check passes (or with
`--no-strict`).

Exit codes: 0 success; 1 a check failed (a binary convolution left float, verification
failed); 2 bad input (missing/unreadable model, no PaBT layers, not a BNN under
`--require-bnn`, bad arguments).
"""

from __future__ import annotations

import argparse
import os
import sys
import warnings

import numpy as np

EXIT_OK, EXIT_CHECK_FAILED, EXIT_BAD_INPUT = 0, 1, 2


class CliError(Exception):
    """A user-facing error: message and exit code."""

    def __init__(self, message: str, code: int = EXIT_BAD_INPUT):
        super().__init__(message)
        self.code = code


def run_cli(build_parser, run, argv: list[str] | None) -> int:
    """Parse `argv`, call `run(args)`; a `CliError` becomes its message and exit code."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    args = build_parser().parse_args(argv)
    try:
        return run(args)
    except CliError as err:
        print(f"error: {err}", file=sys.stderr)
        return err.code if err.code else EXIT_BAD_INPUT


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="pabt-convert",
        description=(
            "Convert a trained PaBT Keras model to a Larq Compute Engine TFLite flatbuffer, "
            "check every binary convolution became an LceBconv2d, and verify it against Keras."
        ),
    )
    parser.add_argument("model", help="a .keras / .h5 file or a SavedModel directory")
    parser.add_argument("output", help="where to write the .tflite flatbuffer")
    parser.add_argument(
        "--verify-samples", type=int, default=500,
        help="inputs to compare LCE's interpreter with Keras on (0 skips; default 500)",
    )  # fmt: skip
    parser.add_argument(
        "--require-bnn", action="store_true",
        help="fail unless every PaBT layer has exactly one active binary convolution",
    )  # fmt: skip
    parser.add_argument("--target", choices=("arm", "xcore"), default="arm", help="LCE target")
    parser.add_argument("--atol", type=float, default=1e-3, help="max |LCE - Keras| allowed")
    parser.add_argument(
        "--min-top1", type=float, default=0.99, help="min top-1 agreement LCE vs Keras"
    )
    parser.add_argument(
        "--no-strict", action="store_true",
        help="write the flatbuffer and exit 0 even if a check fails (prints the failures)",
    )  # fmt: skip
    return parser


def load_keras_model(path: str):
    """Load a .keras/.h5 file or SavedModel directory with pabt_tf's objects registered.

    # Raises
        CliError: missing path or a file that is not a readable Keras model.
    """
    import pabt_tf  # noqa: F401  (Keras 2 + registered custom objects)
    import tensorflow as tf

    tf.get_logger().setLevel("ERROR")  # "compiled the loaded model..." chatter
    if not os.path.exists(path):
        raise CliError(f"model {path!r} does not exist.")
    if os.path.isdir(path) and not os.path.exists(os.path.join(path, "saved_model.pb")):
        raise CliError(f"{path!r} is a directory but not a SavedModel (no saved_model.pb).")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            model = tf.keras.models.load_model(path, compile=False)
    except Exception as err:  # Keras raises many types for unreadable files
        raise CliError(
            f"cannot read model {path!r} as a Keras model ({type(err).__name__}: {err})."
        ) from err
    if not isinstance(model, tf.keras.Model):
        raise CliError(
            f"{path!r} loaded as {type(model).__name__}, not a Keras model; save it with "
            "model.save(...)."
        )
    return model


def verification_inputs(model, samples: int, seed: int = 0) -> tuple[np.ndarray, str]:
    """Real Fashion-MNIST test images for a 28×28×1 model, random inputs otherwise.

    # Returns
        `(inputs, description)`.
    """
    shape = tuple(model.inputs[0].shape[1:])
    if any(d is None for d in shape):
        raise CliError(f"the model's input shape {shape} must be fully known to convert it.")
    if shape == (28, 28, 1):
        from pabt_tf.data import load_fashion_mnist

        try:
            images, _ = load_fashion_mnist("test", limit=samples)
            return images, f"{len(images)} real Fashion-MNIST test images"
        except FileNotFoundError as err:
            note = f" (Fashion-MNIST not available: {err})"
    else:
        note = ""
    rng = np.random.default_rng(seed)
    inputs = rng.standard_normal((samples, *shape)).astype(np.float32)
    return inputs, f"{samples} random N(0, 1) inputs of shape {shape}{note}"


def _layer_table(model) -> str:
    from pabt_tf.layers import pabt_layers

    rows = []
    for layer in pabt_layers(model):
        rows.append(
            f"  {layer.name:<30} {layer.weight_bases}x{layer.activation_bases} bases, "
            f"{layer.active_binary_convs} active binary conv(s)"
        )
    return "\n".join(rows)


def run(args: argparse.Namespace) -> int:
    if args.verify_samples < 0:
        raise CliError(f"--verify-samples must be >= 0, got {args.verify_samples}.")
    out_dir = os.path.dirname(os.path.abspath(args.output))
    if not os.path.isdir(out_dir):
        raise CliError(f"output directory {out_dir!r} does not exist.")

    model = load_keras_model(args.model)

    from pabt_tf.export import ConversionError, convert_with_report
    from pabt_tf.layers import pabt_layers
    from pabt_tf.summary import mean_binary_convs

    layers = pabt_layers(model)
    if not layers:
        raise CliError(
            f"model {args.model!r} has no PaBT (binary) layers: nothing for pabt-convert to "
            "export. Plain Larq models convert with larq_compute_engine.convert_keras_model."
        )
    mean_convs = mean_binary_convs(model)
    print(f"Model {args.model}: {len(layers)} PaBT layer(s)")
    print(_layer_table(model))
    if args.require_bnn and mean_convs > 1.0:
        not_bnn = [layer.name for layer in layers if layer.active_binary_convs > 1]
        raise CliError(
            f"--require-bnn: the model is not a BNN yet: mean active binary convolutions "
            f"per layer {mean_convs:.3f} > 1 (layers with several: {', '.join(not_bnn)}). "
            "Prune to one binary convolution per layer first (PaBTPruningCallback with "
            "target_per_layer=1), or drop --require-bnn to export the multi-bit network."
        )

    inputs, described = (None, "skipped (--verify-samples 0)")
    if args.verify_samples:
        inputs, described = verification_inputs(model, args.verify_samples)
    print(f"Converting (target={args.target}); verification inputs: {described}")
    try:
        report = convert_with_report(
            model,
            inputs,
            strict=True,
            atol=args.atol,
            min_top1=args.min_top1,
            target=args.target,
        )
        failure = None
    except ConversionError as err:
        report, failure = err.report, str(err)
    print(report.format())
    if os.path.isfile(args.model):
        print(f"Keras file: {os.path.getsize(args.model) / 1024:.1f} KiB on disk")
    if failure and not args.no_strict:
        print(f"error: {failure}\n{args.output} was not written (--no-strict writes it anyway).",
              file=sys.stderr)
        return EXIT_CHECK_FAILED
    with open(args.output, "wb") as f:
        f.write(report.flatbuffer)
    print(f"Wrote {args.output} ({report.flatbuffer_bytes / 1024:.1f} KiB)")
    if failure:
        print(f"warning (--no-strict): {failure}", file=sys.stderr)
    return EXIT_OK


def main(argv: list[str] | None = None) -> int:
    """Entry point of `pabt-convert`; returns the exit code."""
    return run_cli(build_parser, run, argv)


if __name__ == "__main__":
    sys.exit(main())
