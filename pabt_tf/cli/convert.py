"""`pabt-convert`: a trained PaBT model (.keras / .h5 / SavedModel) → verified LCE flatbuffer.

    pabt-convert MODEL OUT.tflite [--verify-samples N] [--require-bnn] [--target arm|xcore]
                 [--input-shape 1,H,W,C]

Strips the PaBT layers (`pabt_tf.strip_pabt`), converts with Larq Compute Engine, checks
that every active binary convolution became an `LceBconv2d`, and compares LCE's
interpreter with Keras on real Fashion-MNIST test images when the model takes 28×28×1
inputs (random N(0, 1) inputs of the model's input shape otherwise, one array per input
for a model with several). Inputs and outputs are matched by name, not position (LCE may
order them differently), and each output is compared and reported on its own. Prints the
operator table, sizes and the verification; writes OUT only if every check passes (or
with `--no-strict`).

The output is checked before the (slow) conversion: it must not be the model itself
(under any name), a directory or an unwritable place. It is written to a temporary file
beside it and renamed over OUT only when complete, so a failed write (disk full, file-size
limit) leaves an existing OUT as it was.

Models whose config carries Python code (`Lambda` layers, see
`pabt_tf.cli.model_loading`) are refused before loading, in every format: the `.h5` and
SavedModel loaders would run that code. So are SavedModels without Keras metadata or with
layers Keras would revive from the saved graph. `--unsafe` loads them anyway, for trusted
files.

Exit codes: 0 success; 1 a check failed (a binary convolution left float, verification
failed) or OUT could not be written; 2 bad input (missing/unreadable model, a model
carrying code, a bad output path, no PaBT layers, not a BNN under `--require-bnn`, a
model it cannot convert or verify, e.g. non-float inputs or outputs it cannot match to
the flatbuffer's, a model of unknown input size without `--input-shape`, bad arguments:
every number is checked before anything runs, `--atol` finite and ≥ 0, `--min-top1` in
[0, 1], `--verify-samples` an integer ≥ 0).
"""

from __future__ import annotations

import argparse
import os
import sys

import numpy as np

# Shared CLI plumbing; re-exported here, where it used to live.
from pabt_tf.cli.common import (  # noqa: F401
    EXIT_BAD_INPUT,
    EXIT_CHECK_FAILED,
    EXIT_OK,
    CliError,
    check_count,
    check_number,
    check_output_path,
    run_cli,
    write_atomically,
)
from pabt_tf.cli.model_loading import load_keras_model  # noqa: F401


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="pabt-convert",
        description=(
            "Convert a trained PaBT Keras model to a Larq Compute Engine TFLite flatbuffer, "
            "check every binary convolution became an LceBconv2d, and verify it against Keras."
        ),
    )
    parser.add_argument("model", help="a .keras / .h5 file or a SavedModel directory")
    parser.add_argument(
        "output",
        help="where to write the .tflite flatbuffer (not the model itself; replaced only "
        "once the new file is complete)",
    )
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
        "--input-shape", type=_input_shape, default=None, metavar="B,H,W,C",
        help="input shape to deploy at, e.g. 1,360,480,3: required for a model built on "
        "inputs of unknown size (Input((None, None, C))); its known dimensions must agree "
        "with the model's",
    )  # fmt: skip
    parser.add_argument(
        "--no-strict", action="store_true",
        help="write the flatbuffer and exit 0 even if a check fails (prints the failures)",
    )  # fmt: skip
    parser.add_argument(
        "--unsafe", action="store_true",
        help="load the model even if its config carries Python code (Lambda layers): "
        "loading runs that code. By default such models are refused in every format "
        "(.h5 and SavedModel loaders would run it), and so are SavedModels without Keras "
        "metadata or with layers Keras would revive from the saved graph (its functions "
        "can run any TensorFlow op); use only for files you trust",
    )  # fmt: skip
    return parser


def _input_shape(text: str) -> tuple[int, ...]:
    """`--input-shape 1,360,480,3` → `(1, 360, 480, 3)` (positive integers)."""
    try:
        dims = tuple(int(d) for d in text.split(","))
    except ValueError:
        dims = ()
    if not dims or any(d <= 0 for d in dims):
        raise argparse.ArgumentTypeError(
            f"expected comma-separated positive integers, batch first (e.g. 1,360,480,3), got {text!r}"
        )
    return dims


def verification_inputs(model, samples: int, seed: int = 0) -> tuple[np.ndarray | list, str]:
    """Real Fashion-MNIST test images for a 28×28×1 model, random inputs otherwise (one
    array per input, in `model.inputs` order, for a model with several).

    # Returns
        `(inputs, description)`.

    # Raises
        CliError: an input of unknown shape or of a type random N(0, 1) values cannot
            stand for (integers, strings...).
    """
    if len(model.inputs) > 1:
        return _random_inputs(model, samples, seed)
    shape = tuple(model.inputs[0].shape[1:])
    if any(d is None for d in shape):
        raise CliError(f"the model's input shape {shape} must be fully known to convert it.")
    _check_float_inputs(model)
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


def _check_float_inputs(model) -> None:
    import tensorflow as tf

    for name, tensor in zip(model.input_names, model.inputs):
        if not tf.as_dtype(tensor.dtype).is_floating:
            raise CliError(
                f"the model's input {name!r} is {tf.as_dtype(tensor.dtype).name}: "
                "pabt-convert verifies with random N(0, 1) float inputs, which cannot stand "
                "for it. Convert with --verify-samples 0 and verify with pabt.verify on "
                "inputs of your own."
            )


def _random_inputs(model, samples: int, seed: int) -> tuple[list, str]:
    """Random N(0, 1) inputs for each input of a model with several."""
    shapes = {name: tuple(t.shape[1:]) for name, t in zip(model.input_names, model.inputs)}
    unknown = {name: shape for name, shape in shapes.items() if any(d is None for d in shape)}
    if unknown:
        raise CliError(f"the model's input shapes {unknown} must be fully known to convert it.")
    _check_float_inputs(model)
    rng = np.random.default_rng(seed)
    inputs = [rng.standard_normal((samples, *shape)).astype(np.float32) for shape in shapes.values()]
    described = ", ".join(f"{name!r} {shape}" for name, shape in shapes.items())
    return inputs, f"{samples} random N(0, 1) samples for each input ({described})"


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
    check_count(args.verify_samples, "--verify-samples", minimum=0)
    check_number(args.atol, "--atol", minimum=0.0)
    check_number(args.min_top1, "--min-top1", minimum=0.0, maximum=1.0)
    if not os.path.exists(args.model):
        raise CliError(f"model {args.model!r} does not exist.")
    # Before the slow part: a bad output path must not cost a conversion, nor the model.
    output = check_output_path(args.output, "output", inputs=(args.model,))

    model = load_keras_model(args.model, unsafe=args.unsafe)

    from pabt_tf.costs import mean_binary_convs
    from pabt_tf.export import ConversionError, convert_with_report
    from pabt_tf.flatbuffer_guard import MalformedFlatbufferError, check_flatbuffer
    from pabt_tf.layers import pabt_layers

    layers = pabt_layers(model)
    if not layers:
        raise CliError(
            f"model {args.model!r} has no PaBT (binary) layers: nothing for pabt-convert to "
            "export. Plain Larq models convert with larq_compute_engine.convert_keras_model."
        )
    # Issue 27 part 7: a model of unknown input size is converted at --input-shape.
    from pabt_tf.costs import deploy_input_shape

    dynamic = any(d is None for ref in model.inputs for d in tuple(ref.shape)[1:])
    deploy_shape = None
    if dynamic and args.input_shape is None:
        shape = tuple(model.inputs[0].shape)
        raise CliError(
            f"model {args.model!r} takes inputs of unknown size {shape}: give the input shape "
            f"to deploy at, --input-shape {','.join(str(d or 224) for d in (1, *shape[1:]))} "
            "(batch first); LCE would otherwise build a flatbuffer that only takes 1x1 inputs."
        )
    if args.input_shape is not None:
        try:
            deploy_shape = deploy_input_shape(model, args.input_shape, "--input-shape")
        except ValueError as err:
            raise CliError(str(err)) from err
    if dynamic:  # costs (mean binary convs) at the size deployed; the file is untouched
        from pabt_tf.costs import set_reference_input_shape

        set_reference_input_shape(model, deploy_shape)
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
    if args.verify_samples and dynamic:  # random inputs at the size deployed
        rng = np.random.default_rng(0)
        inputs = rng.standard_normal((args.verify_samples, *deploy_shape[1:])).astype(np.float32)
        described = f"{args.verify_samples} random N(0, 1) inputs of shape {deploy_shape[1:]}"
    elif args.verify_samples:
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
            input_shape=deploy_shape,
        )
        failure = None
    except ConversionError as err:
        report, failure = err.report, str(err)
    except MalformedFlatbufferError as err:  # LCE wrote bytes verify would not run
        print(f"error: {err}\n{args.output} was not written.", file=sys.stderr)
        return EXIT_CHECK_FAILED
    except (TypeError, ValueError) as err:
        # What strip_pabt, LCE or verify cannot handle (a layer without an export rule,
        # inputs and outputs that cannot be matched...): the model is not supported.
        raise CliError(
            f"cannot convert model {args.model!r}: {err}\n{args.output} was not written."
        ) from err
    print(report.format())
    if os.path.isfile(args.model):
        print(f"Keras file: {os.path.getsize(args.model) / 1024:.1f} KiB on disk")
    if failure and not args.no_strict:
        print(f"error: {failure}\n{args.output} was not written (--no-strict writes it anyway).",
              file=sys.stderr)
        return EXIT_CHECK_FAILED
    try:  # what pabt-benchmark and pabt.verify will demand of the file
        check_flatbuffer(report.flatbuffer, "LCE's flatbuffer")
    except MalformedFlatbufferError as err:
        print(f"error: {err}\n{args.output} was not written.", file=sys.stderr)
        return EXIT_CHECK_FAILED
    try:
        write_atomically(output, report.flatbuffer)
    except OSError as err:
        print(f"error: could not write {args.output}: {err.strerror or err}. "
              f"{'It was left as it was.' if os.path.exists(output) else 'Nothing was written.'}",
              file=sys.stderr)  # fmt: skip
        return EXIT_CHECK_FAILED
    print(f"Wrote {args.output} ({report.flatbuffer_bytes / 1024:.1f} KiB)")
    if failure:
        print(f"warning (--no-strict): {failure}", file=sys.stderr)
    return EXIT_OK


def main(argv: list[str] | None = None) -> int:
    """Entry point of `pabt-convert`; returns the exit code."""
    return run_cli(build_parser, run, argv)


if __name__ == "__main__":
    sys.exit(main())
