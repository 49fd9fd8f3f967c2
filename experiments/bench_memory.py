r"""Training memory of one zoo backbone under every method of a comparison: process RSS,
TensorFlow's CPU allocator, and the bytes of the variables and of the optimizer state.

Each configuration runs in a fresh child process (a process's peak RSS never goes down):
full precision, the Larq STE BNN (`bnn`), the Bi-Real-style BNN (`bnn_bireal`), the Larq
Bop BNN (`bnn_bop`), PaBT M = N with latent weights (`pabt`) and latent-weight-free
PaBT (`pabt` with `latent_weights=False`, Bop on the ±1 kernels through Larq's
`CaseOptimizer`). The child builds the model as `experiments.train` does (`train.build`,
the method's optimizer, `fit`'s own training step via `make_train_function`) and runs
`--warmup` steps and then `--steps` measured steps on one fixed random batch. It
reports:

- RSS: right after the imports, just before the first step (current and peak), after
  the warm-up, the peak sampled during the measured steps, and `ru_maxrss` at the end;
- TensorFlow's CPU allocator, where it keeps statistics (with oneDNN on, and then only
  for its large allocations): bytes in use before the steps and its peak during them;
- variable bytes: trainable float, binary (Larq `precision == 1`, what
  `Bop.is_binary_variable` selects), the part of the binary ones that holds real
  latent values (measured: stored values not all ±1), non-trainable; and what the
  binary kernels would take at 1 bit;
- optimizer state bytes (every optimizer variable after the steps; `CaseOptimizer`:
  its inner optimizers), split into the slots of the binary variables, of the other
  trainable variables, and the step counters.

TensorFlow stores ±1 kernels as float32 during training, so going latent-weight-free
does not shrink the kernels; what it removes is the latent weights' second Adam slot
(Bop keeps one slot per binary weight, Adam two).

    python -m experiments.bench_memory --model fmnist_resnet --input_shape 32,32,3 \
        --json results/bench/cifar10_training_memory.json \
        --markdown results/bench/cifar10_training_memory.md

A segmentation backbone (per-pixel logits) gets a random label per pixel.
"""

from __future__ import annotations

import json
import os
import platform
import shlex
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import resource  # noqa: E402

from absl import app, flags  # noqa: E402

FLAGS = flags.FLAGS
flags.DEFINE_string("model", "fmnist_resnet", "Zoo model.")
flags.DEFINE_list("input_shape", ["32", "32", "3"], "Input shape (height, width, channels).")
flags.DEFINE_integer("num_classes", 10, "Classes.")
flags.DEFINE_string("model_kwargs", None, "Extra model builder arguments (JSON).")
flags.DEFINE_integer("bases", 3, "M = N of the PaBT networks.")
flags.DEFINE_integer("batch", 128, "Batch size.")
flags.DEFINE_integer("warmup", 2, "Unmeasured steps first (tracing, first allocations).")
flags.DEFINE_integer("steps", 5, "Measured steps.")
flags.DEFINE_integer("threads", 1, "TF intra-op threads (0 = TensorFlow's default).")
flags.DEFINE_list("configs", None, "Configurations to run (default: all).")
flags.DEFINE_integer("jobs", 1, "Child processes at once (>1: quicker, but step times then "
                     "share the CPU; memory figures are per process either way).")
flags.DEFINE_integer("timeout", 1800, "Seconds a configuration's child process may take.")
flags.DEFINE_string("json", None, "Write the results as JSON to this path.")
flags.DEFINE_string("markdown", None, "Write the results as a Markdown table to this path.")
flags.DEFINE_string("child", None, "Internal: run this one configuration in this process.")
flags.DEFINE_string("child_output", None, "Internal: the child's JSON output path.")

# name: (method, latent_weights)
CONFIGS: dict[str, tuple[str, bool]] = {
    "float": ("float", True),
    "bnn": ("bnn", True),
    "bnn_bireal": ("bnn_bireal", True),
    "bnn_bop": ("bnn_bop", True),
    "pabt": ("pabt", True),
    "pabt_latent_free": ("pabt", False),
}
_MIB = 2.0**20
_SAMPLE_SECONDS = 5e-4


# -- RSS ----------------------------------------------------------------------------------


def current_rss() -> int | None:
    """Resident bytes of this process now (Linux `/proc/self/statm`; None elsewhere)."""
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return None


def peak_rss() -> int:
    """This process's peak resident bytes so far (`ru_maxrss`: KiB on Linux, bytes on macOS)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(peak if sys.platform == "darwin" else peak * 1024)


class RSSSampler:
    """The highest RSS seen by a background thread while the context is open (TF
    releases the GIL while a step runs, so the thread samples during the step)."""

    def __enter__(self):
        self.peak = current_rss() or 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def _run(self):
        while not self._stop.is_set():
            self.peak = max(self.peak, current_rss() or 0)
            time.sleep(_SAMPLE_SECONDS)

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, current_rss() or 0)


# -- the child: one configuration ---------------------------------------------------------


def _nbytes(variable) -> int:
    return int(variable.shape.num_elements()) * variable.dtype.size


def variable_bytes(model) -> dict:
    """The model's variable bytes by kind; see the module docstring."""
    import larq as lq
    import numpy as np

    out = dict(trainable_float=0, binary=0, binary_stored_pm1=0, latent_float=0,
               non_trainable=0, binary_parameters=0)
    dtypes = set()
    seen = set()
    for v in model.variables:
        if v.name in seen:
            continue
        seen.add(v.name)
        n = _nbytes(v)
        if not v.trainable:
            out["non_trainable"] += n
        elif lq.optimizers.Bop.is_binary_variable(v):
            stored = getattr(v, "latent_variable", v).numpy()  # not the quantized view
            dtypes.add(stored.dtype.name)
            out["binary"] += n
            out["binary_parameters"] += stored.size
            if np.all(np.abs(stored) == 1.0):
                out["binary_stored_pm1"] += n
            else:
                out["latent_float"] += n
        else:
            out["trainable_float"] += n
    out["binary_at_1_bit"] = (out["binary_parameters"] + 7) // 8
    out["binary_storage_dtypes"] = sorted(dtypes)
    out["total"] = out["trainable_float"] + out["binary"] + out["non_trainable"]
    return out


def optimizer_bytes(optimizer, model) -> dict:
    """Bytes of every optimizer variable, split by what the slot belongs to."""
    import larq as lq

    inner = list(getattr(optimizer, "optimizers", [optimizer]))  # CaseOptimizer
    kinds = {}  # id(slot) -> the kind of variable it belongs to
    for opt, v in ((opt, v) for opt in inner for v in model.trainable_variables):
        for slot in opt.get_slot_names():
            try:
                kinds[id(opt.get_slot(v, slot))] = (
                    "binary_slots" if lq.optimizers.Bop.is_binary_variable(v) else "float_slots")
            except KeyError:  # another optimizer of the CaseOptimizer trains v
                pass
    out = dict(binary_slots=0, float_slots=0, counters=0)
    for w in {id(w): w for opt in inner for w in opt.weights}.values():
        out[kinds.get(id(w), "counters")] += _nbytes(w)
    out["total"] = out["binary_slots"] + out["float_slots"] + out["counters"]
    out["optimizers"] = {type(opt).__name__: {"slots": sorted(opt.get_slot_names()),
                                              "bytes": sum(_nbytes(w) for w in opt.weights)}
                         for opt in inner}
    return out


def tf_allocator():
    import tensorflow as tf

    try:
        return tf.config.experimental.get_memory_info("CPU:0")
    except (ValueError, RuntimeError):  # no allocator statistics on this build
        return None


def run_child(name: str) -> dict:
    """Build, compile and step configuration `name` in this process; its measurements."""
    import gc

    import pabt_tf  # Keras 2 before TensorFlow

    # isort: split
    import numpy as np
    import tensorflow as tf

    from experiments import train as train_lib
    from pabt_tf.methods import get_optimizer

    tf.get_logger().setLevel("ERROR")
    if FLAGS.threads:
        tf.config.threading.set_intra_op_parallelism_threads(FLAGS.threads)
        tf.config.threading.set_inter_op_parallelism_threads(1)
    rss_after_imports = current_rss()
    method, latent = CONFIGS[name]
    config = dict(train_lib.DEFAULTS, model=FLAGS.model, method=method, weight_bases=FLAGS.bases,
                  activation_bases=FLAGS.bases, latent_weights=latent,
                  model_kwargs=json.loads(FLAGS.model_kwargs) if FLAGS.model_kwargs else {})
    tf.keras.utils.set_random_seed(0)
    input_shape = [int(d) for d in FLAGS.input_shape]
    model = train_lib.build(config, input_shape, FLAGS.num_classes)
    optimizer = get_optimizer(method, 1e-3, latent)
    model.compile(optimizer, tf.keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    train_function = model.make_train_function()
    rng = np.random.default_rng(0)
    x = tf.constant(rng.normal(size=[FLAGS.batch] + input_shape).astype(np.float32))
    # A label per output position: per image (classification) or per pixel (segmentation).
    y = tf.constant(rng.integers(0, FLAGS.num_classes, (FLAGS.batch, *model.output_shape[1:-1])))
    batches = iter(tf.data.Dataset.from_tensors((x, y)).repeat())
    gc.collect()
    before, peak_before, alloc_before = current_rss(), peak_rss(), tf_allocator()
    for _ in range(FLAGS.warmup):
        train_function(batches)["loss"].numpy()
    after_warmup, peak_after_warmup = current_rss(), peak_rss()
    alloc_warmup = tf_allocator()
    if alloc_warmup is not None:  # the peak of the measured steps alone
        tf.config.experimental.reset_memory_stats("CPU:0")
        alloc_steady = tf_allocator()["current"]
    times = []
    with RSSSampler() as sampler:
        for _ in range(FLAGS.steps):
            start = time.perf_counter()
            loss = float(train_function(batches)["loss"].numpy())
            times.append(time.perf_counter() - start)
    peak_end, alloc_end = peak_rss(), tf_allocator()
    if not np.isfinite(loss):
        raise RuntimeError(f"{name}: the training loss is not finite ({loss}).")
    layers = pabt_tf.pabt_layers(model)
    return {
        "method": method, "latent_weights": latent,
        "optimizer": type(optimizer).__name__,
        "active_binary_convs": sum(layer.active_binary_convs for layer in layers),
        "rss": {
            "after_imports": rss_after_imports,
            "before_first_step": before,
            "peak_before_first_step": peak_before,
            "after_warmup": after_warmup,
            "peak_after_warmup": peak_after_warmup,
            "sampled_peak_during_steps": sampler.peak,
            "peak": peak_end,
            "peak_minus_before": None if before is None else peak_end - before,
        },
        "tf_allocator": None if alloc_end is None or alloc_warmup is None else {
            "in_use_before_first_step": (alloc_before or {}).get("current"),
            "peak_during_warmup": alloc_warmup["peak"],
            "in_use_before_steps": alloc_steady,
            "peak_during_steps": alloc_end["peak"],
            "in_use_after_steps": alloc_end["current"],
            "step_transient": alloc_end["peak"] - alloc_steady,
        },
        "variables": variable_bytes(model),
        "optimizer_state": optimizer_bytes(optimizer, model),
        "median_step_ms": 1e3 * float(np.median(times)),
        "final_loss": loss,
    }


# -- the parent: one child per configuration, the report -----------------------------------


def _child_argv(name: str, output: str) -> list[str]:
    argv = [sys.executable, "-m", "experiments.bench_memory", f"--child={name}",
            f"--child_output={output}", f"--model={FLAGS.model}",
            f"--input_shape={','.join(FLAGS.input_shape)}", f"--num_classes={FLAGS.num_classes}",
            f"--bases={FLAGS.bases}", f"--batch={FLAGS.batch}", f"--warmup={FLAGS.warmup}",
            f"--steps={FLAGS.steps}", f"--threads={FLAGS.threads}"]
    if FLAGS.model_kwargs:
        argv.append(f"--model_kwargs={FLAGS.model_kwargs}")
    return argv


def run_all(names: list[str]) -> dict[str, dict]:
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [root, os.environ.get("PYTHONPATH")])))
    with tempfile.TemporaryDirectory(prefix="bench_memory_") as tmp:

        def run(name: str) -> dict:
            output = os.path.join(tmp, f"{name}.json")
            proc = subprocess.run(_child_argv(name, output), cwd=root, env=env, capture_output=True,
                                  text=True, timeout=FLAGS.timeout)
            if proc.returncode != 0 or not os.path.exists(output):
                raise RuntimeError(f"Configuration {name!r} failed (exit {proc.returncode}):\n"
                                   f"{proc.stderr[-3000:]}")
            with open(output) as f:
                row = json.load(f)
            print(f"{name}: peak RSS {row['rss']['peak'] / _MIB:.0f} MiB", flush=True)
            return row

        with ThreadPoolExecutor(FLAGS.jobs) as pool:
            return dict(zip(names, pool.map(run, names)))


def environment() -> dict:
    from importlib import metadata

    versions = {}
    for dist in ("pabt_tf", "tensorflow", "tf_keras", "larq", "larq-compute-engine", "numpy"):
        try:
            versions[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            versions[dist] = None
    cpu = platform.processor()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    try:
        memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError):
        memory = None
    return {"machine": platform.machine(), "cpu": cpu, "cpus": os.cpu_count(), "memory_bytes": memory,
            "system": platform.platform(), "python": platform.python_version(), "versions": versions,
            "env": {k: os.environ.get(k) for k in ("TF_ENABLE_ONEDNN_OPTS", "TF_CPU_ALLOCATOR_USE_BFC",
                                                   "TF_USE_LEGACY_KERAS")}}


def _mib(n) -> str:
    return "–" if n is None else f"{n / _MIB:.1f}"


def _kib(n) -> str:
    return "–" if n is None else f"{n / 1024:,.0f}"


def summary(rows: dict[str, dict]) -> str:
    """A paragraph of what the numbers say (computed from them)."""
    if not {"pabt", "pabt_latent_free"} <= set(rows):
        return ""
    lat, free = rows["pabt"], rows["pabt_latent_free"]
    lo, fo = lat["optimizer_state"]["total"], free["optimizer_state"]["total"]
    lb, fb = lat["variables"]["binary"], free["variables"]["binary"]
    text = (
        f"Latent-weight-free PaBT (Bop on the ±1 kernels) holds {_kib(fo)} KiB of optimizer "
        f"state against {_kib(lo)} KiB for latent-weight PaBT ({100 * (fo - lo) / lo:+.0f} %): "
        f"Bop keeps one slot per binary weight where Adam keeps two. Its ±1 kernels are still "
        f"stored as {'/'.join(free['variables']['binary_storage_dtypes'])} during training "
        f"({_kib(fb)} KiB, the same as latent PaBT's {_kib(lb)} KiB of latent kernels; "
        f"{_kib(free['variables']['binary_at_1_bit'])} KiB at 1 bit). Peak RSS "
        f"{_mib(free['rss']['peak'])} vs {_mib(lat['rss']['peak'])} MiB")
    if "bnn" in rows:
        text += f" (Larq STE BNN {_mib(rows['bnn']['rss']['peak'])} MiB"
        if "bnn_bop" in rows:
            text += f", Bop BNN {_mib(rows['bnn_bop']['rss']['peak'])} MiB"
        text += ")"
    alloc_l, alloc_f = lat["tf_allocator"], free["tf_allocator"]
    if alloc_l and alloc_f:
        text += (f"; TensorFlow's allocator peak during a step {_mib(alloc_f['peak_during_steps'])} "
                 f"vs {_mib(alloc_l['peak_during_steps'])} MiB")
    return text + "."


def markdown(result: dict) -> str:
    rows, env = result["rows"], result["environment"]
    lines = [
        f"# Training memory: `{result['model']}` at {'×'.join(map(str, result['input_shape']))}, "
        f"batch {result['batch']}",
        "",
        f"Command: `{result['command']}`",
        "",
        f"Machine: {env['machine']}, {env['cpu']}, {env['cpus']} CPUs, "
        f"{_mib(env['memory_bytes'])} MiB; {env['system']}; Python {env['python']}; "
        + ", ".join(f"{k} {v}" for k, v in env["versions"].items()) + ". "
        f"{result['threads'] or 'default'} TF thread(s), {result['warmup']} warm-up + "
        f"{result['steps']} measured steps, each configuration in a fresh process "
        f"({result['jobs']} at a time; load average {result['load_average_at_end'][0]:.1f} at the end); "
        f"TF_ENABLE_ONEDNN_OPTS={env['env']['TF_ENABLE_ONEDNN_OPTS'] or 'unset'}; "
        f"model kwargs {result['model_kwargs'] or 'default'}; PaBT M = N = {result['bases']}.",
        "",
        "Process and allocator memory (MiB). RSS *before*: just before the first step "
        "(model built and compiled); *warm*: after the warm-up steps (the step traced); "
        "*steps*: the highest RSS sampled during the measured steps; *peak*: `ru_maxrss` at "
        "the end; *peak − before*: what training added (tracing included). TF allocator: "
        "TensorFlow's CPU allocator statistics as it reports them (`get_memory_info`; only "
        "with oneDNN on, and then for its large allocations only: a tiny model reports 0, "
        "so these undercount); *in use*: bytes held before the measured steps; *step peak*: "
        "the peak during them; *transient*: the difference (activations, gradients).",
        "",
        "| configuration | optimizer | RSS before | warm | steps | peak | peak − before "
        "| TF in use | TF step peak | transient | step ms |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for name, r in rows.items():
        rss, alloc = r["rss"], r["tf_allocator"] or {}
        lines.append(
            f"| {name} | {r['optimizer']} | {_mib(rss['before_first_step'])} "
            f"| {_mib(rss['after_warmup'])} | {_mib(rss['sampled_peak_during_steps'])} "
            f"| {_mib(rss['peak'])} | {_mib(rss['peak_minus_before'])} "
            f"| {_mib(alloc.get('in_use_before_steps'))} | {_mib(alloc.get('peak_during_steps'))} "
            f"| {_mib(alloc.get('step_transient'))} | {r['median_step_ms']:.0f} |")
    lines += [
        "",
        "Variable and optimizer-state bytes (KiB). *binary*: Larq `precision == 1` "
        "variables (`Bop.is_binary_variable`), as stored (float32); *of which latent*: "
        "binary variables whose stored values are not all ±1; *at 1 bit*: what the binary "
        "kernels would take packed (deployment, not training); optimizer state split into "
        "the slots of binary variables, of the other trainable variables, and step counters.",
        "",
        "| configuration | trainable float | binary (stored) | of which latent | binary at 1 bit "
        "| non-trainable | optimizer state | for binary | for float | counters |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for name, r in rows.items():
        v, o = r["variables"], r["optimizer_state"]
        lines.append(
            f"| {name} | {_kib(v['trainable_float'])} | {_kib(v['binary'])} | {_kib(v['latent_float'])} "
            f"| {_kib(v['binary_at_1_bit'])} | {_kib(v['non_trainable'])} | {_kib(o['total'])} "
            f"| {_kib(o['binary_slots'])} | {_kib(o['float_slots'])} | {o['counters']} B |")
    text = summary(rows)
    if text:
        lines += ["", text]
    return "\n".join(lines) + "\n"


def _write_text(path: str, text: str) -> None:
    """Write atomically: a failed run leaves the previous file."""
    path = os.path.abspath(path)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    tmp = f"{path}.tmp-{os.getpid()}"
    try:
        with open(tmp, "w") as f:
            f.write(text)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def _check_flags() -> list[str]:
    names = FLAGS.configs or list(CONFIGS)
    unknown = [n for n in names if n not in CONFIGS]
    if unknown or not names or len(set(names)) != len(names):
        raise app.UsageError(f"--configs must be distinct names of {list(CONFIGS)}, got {names}.")
    for flag, least in (("batch", 1), ("steps", 1), ("warmup", 1), ("bases", 1), ("num_classes", 2),
                        ("threads", 0), ("jobs", 1), ("timeout", 1)):
        if getattr(FLAGS, flag) < least:
            raise app.UsageError(f"--{flag} must be at least {least}, got {getattr(FLAGS, flag)}.")
    try:
        shape = [int(d) for d in FLAGS.input_shape]
    except ValueError:
        shape = []
    if len(shape) != 3 or min(shape) < 1:
        raise app.UsageError(f"--input_shape must be three positive integers, got {FLAGS.input_shape}.")
    if FLAGS.model_kwargs:
        try:
            kwargs = json.loads(FLAGS.model_kwargs)
        except json.JSONDecodeError as e:
            raise app.UsageError(f"--model_kwargs must be a JSON object: {e}") from None
        if not isinstance(kwargs, dict):
            raise app.UsageError(f"--model_kwargs must be a JSON object, got {FLAGS.model_kwargs}.")
    return names


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments {argv[1:]}.")
    names = _check_flags()
    if FLAGS.child:
        if FLAGS.child not in CONFIGS or not FLAGS.child_output:
            raise app.UsageError("--child needs a configuration name and --child_output.")
        from experiments.common import write_json

        write_json(FLAGS.child_output, run_child(FLAGS.child))
        return 0
    from experiments.common import code_version

    rows = run_all(names)
    result = {
        "command": shlex.join(["python", "-m", "experiments.bench_memory", *sys.argv[1:]]),
        "model": FLAGS.model, "input_shape": [int(d) for d in FLAGS.input_shape],
        "num_classes": FLAGS.num_classes, "model_kwargs": FLAGS.model_kwargs, "bases": FLAGS.bases,
        "batch": FLAGS.batch, "warmup": FLAGS.warmup, "steps": FLAGS.steps, "threads": FLAGS.threads,
        "jobs": FLAGS.jobs, "environment": environment(), "load_average_at_end": os.getloadavg(),
        "code": code_version(), "rows": rows,
    }
    text = markdown(result)
    print(text)
    if FLAGS.json:
        from experiments.common import write_json

        write_json(FLAGS.json, result)
    if FLAGS.markdown:
        _write_text(FLAGS.markdown, text)
    return 0


if __name__ == "__main__":
    app.run(main)
