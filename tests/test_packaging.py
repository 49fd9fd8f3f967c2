"""The built wheel: only `pabt_tf` in it, typed, console scripts inside the package,
requirements as ranges (no exact pin, no `tensorflow-cpu`); and, slow, that wheel
installed (not editable) into a fresh virtualenv and run from outside the checkout."""

import ast
import configparser
import email
import os
import shutil
import subprocess
import sys
import zipfile

import pytest

import pabt_tf

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCRIPTS = {"pabt-convert", "pabt-benchmark", "pabt-quickstart"}


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> str:
    """`pip wheel --no-deps --no-build-isolation` of a copy of the source.

    Built from a copy (setup.py, README, LICENSE, the package) so that no `build/`
    directory left in the checkout by an earlier build can slip stale files into it.
    """
    root = tmp_path_factory.mktemp("wheel")
    source, out = root / "source", root / "dist"
    source.mkdir()
    for name in ("setup.py", "README.md", "LICENSE"):
        shutil.copy(os.path.join(REPO, name), source / name)
    shutil.copytree(os.path.join(REPO, "pabt_tf"), source / "pabt_tf",
                    ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))  # fmt: skip
    proc = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation",
         "--wheel-dir", str(out), str(source)],
        capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    wheels = list(out.glob("pabt_tf-*.whl"))
    assert len(wheels) == 1, wheels
    return str(wheels[0])


def _dist_info(names: list[str]) -> str:
    (dist_info,) = {n.split("/")[0] for n in names if n.split("/")[0].endswith(".dist-info")}
    return dist_info


def test_wheel_holds_only_pabt_tf_typed(wheel):
    with zipfile.ZipFile(wheel) as zf:
        names = zf.namelist()
    dist_info = _dist_info(names)
    assert {n.split("/")[0] for n in names} == {"pabt_tf", dist_info}
    assert dist_info == f"pabt_tf-{pabt_tf.__version__}.dist-info"  # one version, setup.py's
    assert "pabt_tf/py.typed" in names
    for module in ("pabt_tf/cli/convert.py", "pabt_tf/run/train.py", "pabt_tf/export/sweep.py"):
        assert module in names
    assert any(n.startswith(dist_info) and n.endswith("LICENSE") for n in names)


def test_wheel_console_scripts_resolve_inside_the_package(wheel):
    with zipfile.ZipFile(wheel) as zf:
        names = set(zf.namelist())
        entry_points = configparser.ConfigParser()
        entry_points.read_string(zf.read(f"{_dist_info(list(names))}/entry_points.txt").decode())
        scripts = dict(entry_points["console_scripts"])
        assert set(scripts) == SCRIPTS
        for script, target in scripts.items():
            module, function = target.split(":")
            assert module.split(".")[0] == "pabt_tf", (script, target)
            path = module.replace(".", "/") + ".py"
            assert path in names, (script, target)
            tree = ast.parse(zf.read(path))
            defined = {node.name for node in tree.body if isinstance(node, ast.FunctionDef)}
            assert function in defined, (script, target)


def test_wheel_requirements_are_ranges_on_tensorflow(wheel):
    with zipfile.ZipFile(wheel) as zf:
        metadata = email.message_from_bytes(zf.read(f"{_dist_info(zf.namelist())}/METADATA"))
    requires = metadata.get_all("Requires-Dist")
    runtime = [r for r in requires if "extra ==" not in r]
    names = {r.split(";")[0].split("<")[0].split(">")[0].split("=")[0].split("[")[0].strip().lower()
             for r in runtime}  # fmt: skip
    assert {"tensorflow", "tf-keras", "larq", "larq-compute-engine", "numpy"} <= names
    assert "tensorflow-cpu" not in names
    for requirement in requires:
        spec = requirement.split(";")[0]
        assert "==" not in spec and "===" not in spec, f"exact pin: {requirement}"
    assert metadata["License"] == "Apache-2.0"
    classifiers = metadata.get_all("Classifier")
    assert "License :: OSI Approved :: Apache Software License" in classifiers
    assert "Typing :: Typed" in classifiers


def _site_packages(python: str) -> str:
    return subprocess.run(
        [python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        capture_output=True, text=True, check=True,
    ).stdout.strip()  # fmt: skip


@pytest.mark.slow
def test_wheel_installs_and_runs_outside_the_checkout(wheel, tmp_path):
    """The wheel, not editable, in a fresh virtualenv; run from a directory outside the
    checkout, so nothing can come from the source tree.

    The new virtualenv sees this environment's packages through a `.pth` line (what
    `--system-site-packages` does for a system Python; from inside a virtualenv that flag
    would point at the base interpreter instead), so installing resolves every
    requirement from what is already installed and downloads nothing (`--no-index`).
    pabt_tf itself comes only from the wheel: its own site-packages comes first.
    """
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=300)
    python = str(venv / "bin" / "python")
    ours = _site_packages(sys.executable)
    with open(os.path.join(_site_packages(python), "outer_environment.pth"), "w") as f:
        f.write(ours + "\n")
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    install = subprocess.run(
        [python, "-m", "pip", "install", "--no-index", "--no-cache-dir", wheel],
        capture_output=True, text=True, timeout=600, env=env, cwd=tmp_path,
    )  # fmt: skip
    assert install.returncode == 0, install.stdout[-3000:] + install.stderr[-3000:]
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    probe = subprocess.run(
        [python, "-c",
         "import importlib.util, pabt_tf; print(pabt_tf.__file__); print(pabt_tf.__version__); "
         "print(importlib.util.find_spec('converters'), importlib.util.find_spec('experiments'))"],
        capture_output=True, text=True, timeout=600, env=env, cwd=outside,
    )  # fmt: skip
    assert probe.returncode == 0, probe.stderr[-3000:]
    location, version, others = probe.stdout.strip().splitlines()[-3:]
    assert location.startswith(_site_packages(python)), location  # the wheel's copy
    assert version == pabt_tf.__version__
    assert others == "None None"  # converters/ and experiments/ are not installed
    help_run = subprocess.run(
        [str(venv / "bin" / "pabt-convert"), "--help"],
        capture_output=True, text=True, timeout=600, env=env, cwd=outside,
    )  # fmt: skip
    assert help_run.returncode == 0, help_run.stderr[-3000:]
    assert help_run.stdout.startswith("usage: pabt-convert")
    for script in SCRIPTS:
        assert (venv / "bin" / script).exists()
