from setuptools import find_packages, setup

# One mutually consistent set, seen working together with `pip check` clean (DESIGN.md §4):
# larq 0.14 + larq-compute-engine 0.16 need tf.keras = Keras 2 (tf-keras, same minor as
# TensorFlow) and numpy < 2; the newest tensorflow-datasets pulls a protobuf that breaks TF.
INSTALL_REQUIRES = [
    "tensorflow-cpu==2.19.1",
    "tf-keras==2.19.0",
    "larq==0.14.0",
    "larq-compute-engine==0.16.0",
    "tensorflow-datasets==4.9.8",
    # tensorflow-metadata >= 1.18 ships protobuf-6 generated code; TF 2.19 keeps protobuf 5,
    # and `import tensorflow_datasets` then fails (pip check does not see it).
    "tensorflow-metadata>=1.16,<1.18",
    # tfds 4.9.8 uses importlib_resources in DatasetBuilder.code_path on every Python.
    "importlib_resources>=6",
    "absl-py>=2.1,<3",
    "numpy>=1.26,<2",
    "matplotlib>=3.8,<4",
]

setup(
    name="pabt_tf",
    version="0.1.0",
    description=(
        "Pruning as a Binarization Technique (PaBT): train multi-base binary networks "
        "with Larq, prune binary convolutions by gradient importance down to a BNN, and "
        "deploy with Larq Compute Engine."
    ),
    long_description=open("README.md").read() if __import__("os").path.exists("README.md") else "",
    long_description_content_type="text/markdown",
    python_requires=">=3.10,<3.13",
    packages=find_packages(include=["pabt_tf", "pabt_tf.*", "converters", "experiments"]),
    install_requires=INSTALL_REQUIRES,
    extras_require={"dev": ["pytest>=8,<10", "pytest-timeout>=2.3"]},
    entry_points={
        "console_scripts": [
            "pabt-convert=converters.convert:main",
            "pabt-benchmark=converters.benchmark:main",
            "pabt-quickstart=experiments.quickstart:main",
        ]
    },
)
