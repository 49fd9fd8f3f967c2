#!/usr/bin/env bash
# The ranges install, as a user gets it: `pip install .` WITHOUT constraints.txt into a
# fresh virtualenv (whatever versions setup.py's ranges resolve to today), `pip check`, the
# versions it got, then a short train -> prune -> convert -> verify run there, from outside
# the checkout: pabt-quickstart (its TensorBoard summaries included) on a few Fashion-MNIST
# images, and pabt-convert of the model it saved.
#
#     bash .ci/ranges_install.sh      # PYTHON=python3.12 to try another interpreter
#
# Needs the registry (about 1 GB of wheels on a cold pip cache) and Debian's
# dataset-fashion-mnist (`make setup` installs it). Everything goes into a temporary
# directory, removed at the end (KEEP=1 keeps it); nothing is written into the checkout.
set -euo pipefail
REPO="$(cd "$(dirname "$0")/.." && pwd)"
PYTHON="${PYTHON:-python3}"
DATA=/usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz
if [ ! -e "$DATA" ]; then
    echo "error: Fashion-MNIST is not installed ($DATA); run 'make setup' (or apt-get install -y dataset-fashion-mnist)." >&2
    exit 2
fi
WORK="$(mktemp -d "${TMPDIR:-/tmp}/pabt-ranges.XXXXXX")"
if [ "${KEEP:-0}" = 1 ]; then echo "(keeping $WORK)"; else trap 'rm -rf "$WORK"' EXIT; fi

# A copy of what the wheel is built from, so that the build leaves nothing in the checkout.
mkdir "$WORK/src"
cp "$REPO/setup.py" "$REPO/README.md" "$REPO/LICENSE" "$WORK/src/"
cp -r "$REPO/pabt_tf" "$WORK/src/pabt_tf"
find "$WORK/src" -name __pycache__ -prune -exec rm -rf {} +

echo "== ranges install: fresh virtualenv, pip install . (no constraints)"
"$PYTHON" -m venv "$WORK/venv"
PY="$WORK/venv/bin/python"
# Nothing from the caller's environment: no PYTHONPATH (a checkout first on the path),
# no other virtualenv, no constraints file or pip settings of the caller.
unset PYTHONPATH VIRTUAL_ENV PIP_CONSTRAINT PIP_REQUIREMENT
"$PY" -m pip install -q --upgrade pip
"$PY" -m pip install -q "$WORK/src"
"$PY" -m pip check
echo "== versions the ranges resolved to"
"$PY" - <<'PYEOF'
import importlib.metadata as md
import platform
print(f"  {'python':<22} {platform.python_version()}")
for name in ("tensorflow", "tf-keras", "larq", "larq-compute-engine", "numpy", "tensorboard",
             "tensorflow-datasets", "protobuf", "pabt_tf"):
    try:
        version = md.version(name)
    except md.PackageNotFoundError:
        version = "(not installed)"
    print(f"  {name:<22} {version}")
PYEOF

echo "== short run on the ranges install: train -> prune -> convert -> verify"
cd "$WORK"  # outside the checkout: pabt_tf can only come from the install
export TF_USE_LEGACY_KERAS=1 TF_CPP_MIN_LOG_LEVEL=2
"$WORK/venv/bin/pabt-quickstart" --epochs 1 --steps 6 --train_limit 768 --test_limit 256 \
    --verify_samples 128 --batch_size 64 --verbose 2 --output_dir "$WORK/run"
test -s "$WORK/run/model.tflite"
ls "$WORK/run/tensorboard" >/dev/null  # the summaries were written
"$WORK/venv/bin/pabt-convert" "$WORK/run/model.keras" "$WORK/converted.tflite" \
    --verify-samples 128 --require-bnn
echo "== ranges install OK"
