"""The BNN baseline with the highest mean *validation* accuracy in a comparison's
summary.json (printed as its method name), e.g. to pick which baseline a longer run is
compared with. Test accuracy is not read.

    python -m experiments.best_baseline results/cifar10/compare/baselines/summary.json
"""

from __future__ import annotations

import sys

from experiments.common import read_json

BNN_BASELINES = ("bnn_bireal", "bnn", "bnn_bop")


def best_baseline(summary: dict, methods=BNN_BASELINES) -> str:
    """The method of `methods` whose row has the highest `val_accuracy_mean` (segmentation:
    `val_miou_mean`).

    # Raises
        ValueError: no row of those methods has a validation accuracy.
    """
    # Segmentation rows are judged by validation mIoU, classification rows by accuracy.
    def score(r):
        return r.get("val_miou_mean") if r.get("task") == "segmentation" else r.get("val_accuracy_mean")

    rows = [r for r in summary["rows"] if r["method"] in methods and score(r) is not None]
    if not rows:
        raise ValueError(f"no row of {methods} with a validation score in the summary")
    return max(rows, key=score)["method"]


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print(__doc__, file=sys.stderr)
        return 2
    print(best_baseline(read_json(argv[1])))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
