"""Packaging of pabt_tf: only the `pabt_tf` package goes into the wheel.

Requirements are *ranges* of what pabt_tf needs and was seen working with (DESIGN.md §4);
the exact set tested together lives in `constraints.txt`, which `make` and CI install
with (`pip install -c constraints.txt -e '.[dev]'`).
"""

import os

from setuptools import find_packages, setup

HERE = os.path.dirname(os.path.abspath(__file__))

INSTALL_REQUIRES = [
    # Larq and LCE need tf.keras = Keras 2: `tf-keras` of the same minor as TensorFlow.
    # TensorFlow itself is `tensorflow` (never `tensorflow-cpu` beside it: tf-keras
    # requires `tensorflow`, and both would write the same `tensorflow/` package). Seen
    # working: 2.16, 2.19 and 2.21.
    "tensorflow>=2.16,<2.22",
    "tf-keras>=2.16,<2.22",
    "larq>=0.14,<0.15",
    "larq-compute-engine>=0.16,<0.17",
    "numpy>=1.26,<2",  # larq 0.14 and larq-compute-engine 0.16 need numpy 1
    "tensorflow-datasets>=4.9,<5",
    # tensorflow-metadata >= 1.18 ships protobuf-6 generated code; TensorFlow <= 2.19 keeps
    # protobuf 5, and `import tensorflow_datasets` then fails (pip check does not see it).
    "tensorflow-metadata>=1.16,<1.18",
    # tensorflow-datasets 4.9.8 uses importlib_resources in DatasetBuilder.code_path on
    # every Python version without declaring it.
    "importlib_resources>=6",
    "absl-py>=2.1,<3",
    "matplotlib>=3.8,<4",
    # Imported by pabt_tf itself, so declared even where TensorFlow brings them today:
    # summaries (PaBTPruningCallback(log_dir=...), Keras' TensorBoard callback, every
    # training run) need TensorBoard, which TensorFlow >= 2.20 no longer requires (without
    # it they die with TBNotInstalledError); `flatbuffers.flexbuffers` decodes LCE's
    # operator options; h5py reads .h5 models' configs before pabt-convert loads them.
    "tensorboard>=2.16,<3",
    "flatbuffers>=24.3.25",
    "h5py>=3.11,<4",
    # Segmentation masks are read with Pillow (palette PNGs give their class indices).
    "pillow>=10",
]

EXTRAS_REQUIRE = {
    "dev": [
        "pytest>=8,<10",
        "pytest-timeout>=2.3",
        "pytest-xdist>=3.5",  # make test: -n 2
        "ruff>=0.6",
        # The wheel test builds with --no-build-isolation: setuptools with bdist_wheel.
        "setuptools>=70.1",
    ],
    "docs": [
        "mkdocs>=1.6,<2",
        "mkdocs-material>=9.5,<10",
        "mkdocstrings[python]>=0.26",
    ],
}


def _readme() -> str:
    path = os.path.join(HERE, "README.md")
    if not os.path.exists(path):
        return ""
    with open(path, encoding="utf-8") as f:
        return f.read()


setup(
    name="pabt_tf",
    version="0.1.0",  # the only place the version is written; pabt_tf.__version__ reads it
    description=(
        "Pruning as a Binarization Technique (PaBT): train multi-base binary networks "
        "with Larq, prune binary convolutions by gradient importance down to a BNN, and "
        "deploy with Larq Compute Engine."
    ),
    long_description=_readme(),
    long_description_content_type="text/markdown",
    license="Apache-2.0",
    license_files=["LICENSE"],
    python_requires=">=3.10,<3.13",
    packages=find_packages(include=["pabt_tf", "pabt_tf.*"]),
    package_data={"pabt_tf": ["py.typed"]},
    include_package_data=False,
    zip_safe=False,
    install_requires=INSTALL_REQUIRES,
    extras_require=EXTRAS_REQUIRE,
    entry_points={
        "console_scripts": [
            "pabt-convert=pabt_tf.cli.convert:main",
            "pabt-benchmark=pabt_tf.cli.benchmark:main",
            "pabt-quickstart=pabt_tf.cli.quickstart:main",
        ]
    },
    classifiers=[
        "Development Status :: 3 - Alpha",
        "Intended Audience :: Developers",
        "Intended Audience :: Science/Research",
        "License :: OSI Approved :: Apache Software License",
        "Operating System :: POSIX :: Linux",
        "Programming Language :: Python :: 3",
        "Programming Language :: Python :: 3 :: Only",
        "Programming Language :: Python :: 3.10",
        "Programming Language :: Python :: 3.11",
        "Programming Language :: Python :: 3.12",
        "Topic :: Scientific/Engineering :: Artificial Intelligence",
        "Topic :: Software Development :: Libraries :: Python Modules",
        "Typing :: Typed",
    ],
)
