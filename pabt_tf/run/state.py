"""Resumable training runs: what a run has done so far survives the process.

A run directory gets `backup/` (Keras `BackupAndRestore`: weights, optimizer slots and
iteration count, the epoch; PaBT's masks, importances, soft-pruning progress and step
live in the model's weights, so the pruning schedule resumes with them) and
`progress.json` (per-epoch history, active binary convolutions per layer, learning rates,
epoch times, pruning events, wall time of every piece). A run stopped mid-training and
started again with the same configuration continues from its last finished epoch; the
records of the pieces are joined so the run's `history.json` is that of one run.
Resumed epochs see a differently shuffled stream of batches than an uninterrupted run
would (tf.data restarts its shuffle), which is the only difference.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from typing import Any

import tensorflow as tf

from pabt_tf.run.records import read_json, write_json

PROGRESS = "progress.json"
BACKUP = "backup"
LOCK = "run.lock"


class RunLock:
    """Exclusive use of a run directory by one process (`run.lock` holds its pid).

    Two processes training into one run directory (two `compare` invocations on the same
    output) would overwrite each other's checkpoints and progress; the second one fails
    instead. A lock left by a process that no longer exists (killed) is taken over.

    # Raises
        RuntimeError: on `__enter__`, if a live process holds the lock.
    """

    def __init__(self, run_dir: str):
        self.path = os.path.join(run_dir, LOCK)

    def __enter__(self) -> "RunLock":
        os.makedirs(os.path.dirname(self.path), exist_ok=True)
        for _ in range(2):
            try:
                fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                holder = self._holder()
                if holder is not None and holder != os.getpid() and _alive(holder):
                    raise RuntimeError(
                        f"{os.path.dirname(self.path)} is in use by process {holder} "
                        f"(its {LOCK}); wait for it, or delete the lock if that process "
                        "is not training there."
                    ) from None
                os.remove(self.path)  # stale: its process is gone
                continue
            with os.fdopen(fd, "w") as f:
                f.write(str(os.getpid()))
            return self
        raise RuntimeError(f"could not take {self.path}")

    def __exit__(self, *exc) -> None:
        if self._holder() == os.getpid():
            os.remove(self.path)

    def _holder(self) -> int | None:
        try:
            with open(self.path) as f:
                return int(f.read().strip() or -1)
        except (OSError, ValueError):
            return None


def _alive(pid: int) -> bool:
    if pid <= 0:  # an unreadable lock; kill(0 or -1, ...) would address process groups
        return False
    try:
        os.kill(pid, 0)  # signal 0: only asks whether the process exists
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, another user's
        return True
    return True


class RunProgress(tf.keras.callbacks.Callback):
    """Writes `progress.json` at every epoch end and holds what earlier pieces recorded.

    List it *before* `backup_callback(...)`: its record of an epoch is written before the
    backup of that epoch, so a kill between the two re-runs the epoch and overwrites the
    record instead of losing it.

    # Arguments
        run_dir: the run directory.
        config: the run's configuration; a resumed run must have the same one.
        recorders: objects with `state()` / `restore(state)` (e.g. `EpochRecorder`)
            whose per-epoch lists are saved too, keyed by name.

    # Raises
        ValueError: `progress.json` belongs to a run with another configuration.
        RuntimeError: `progress.json` records finished epochs but `backup/` holds no
            checkpoint of them.
    """

    def __init__(self, run_dir: str, config: dict[str, Any], recorders: dict[str, Any]):
        super().__init__()
        self.path = os.path.join(run_dir, PROGRESS)
        self.config = _comparable(config)
        self.recorders = recorders
        self.state: dict[str, Any] = {"epochs_done": 0, "history": {}, "pieces": [], "recorders": {}}
        if os.path.exists(self.path):
            saved = read_json(self.path)
            if saved.get("config") != self.config:
                raise ValueError(
                    f"{self.path} belongs to a run with another configuration; use a new "
                    "output_dir or delete the run directory to start over.\n"
                    f"  saved:     {saved.get('config')}\n  requested: {self.config}"
                )
            if saved.get("epochs_done", 0) > 0 and not has_backup(run_dir):
                # Without the weights the run would restart at epoch 0 while this record
                # claims finished epochs: a history and train time of two different runs.
                raise RuntimeError(
                    f"{self.path} records {saved['epochs_done']} finished epoch(s) but "
                    f"{os.path.join(run_dir, BACKUP)} holds no checkpoint to resume them "
                    "from (deleted, or the directory was copied without it); delete "
                    f"{self.path} to start the run over."
                )
            self.state = saved
        self._piece_start = time.time()

    @property
    def resumed(self) -> bool:
        return self.state["epochs_done"] > 0

    def restore_recorders(self) -> None:
        for name, recorder in self.recorders.items():
            if name in self.state["recorders"]:
                recorder.restore(self.state["recorders"][name], self.state["epochs_done"])

    def on_train_begin(self, logs=None):
        self._piece_start = time.time()
        self.state["pieces"].append({"start_epoch": self.state["epochs_done"], "seconds": 0.0})

    def on_epoch_end(self, epoch, logs=None):
        history = self.state["history"]
        for key, value in (logs or {}).items():
            values = history.setdefault(key, [])
            del values[epoch:]  # a re-run epoch replaces its earlier record
            values.append(float(value))
        self.state["epochs_done"] = epoch + 1
        self.state["pieces"][-1]["seconds"] = time.time() - self._piece_start
        self.state["recorders"] = {n: r.state() for n, r in self.recorders.items()}
        self.state["config"] = self.config
        write_json(self.path, self.state)

    def on_train_end(self, logs=None):
        # The piece's wall time includes the end-of-training callbacks; not saved to
        # progress.json (the next epoch-end write, if any, would cover it anyway).
        self.state["pieces"][-1]["seconds"] = time.time() - self._piece_start

    @property
    def train_seconds(self) -> float:
        """Wall time of `fit` over all pieces of the run."""
        return sum(p["seconds"] for p in self.state["pieces"])


def backup_callback(run_dir: str) -> tf.keras.callbacks.Callback:
    """Keras' `BackupAndRestore` in `run_dir/backup`, kept after `fit` (deleted by
    `finish` once the run's results are written, so a kill during evaluation or
    conversion does not retrain)."""
    return tf.keras.callbacks.BackupAndRestore(os.path.join(run_dir, BACKUP), delete_checkpoint=False)


def has_backup(run_dir: str) -> bool:
    """Whether `run_dir/backup` holds a checkpoint `BackupAndRestore` can restore."""
    root = os.path.join(run_dir, BACKUP)
    for dirpath, _, files in os.walk(root):  # `chief/` or a worker's subfolder
        if "checkpoint" in files and tf.train.latest_checkpoint(dirpath):
            return True
    return False


def finish(run_dir: str) -> None:
    """Remove the resume state of a completed run (its results.json is written)."""
    shutil.rmtree(os.path.join(run_dir, BACKUP), ignore_errors=True)


def _comparable(config: dict[str, Any]) -> dict[str, Any]:
    """The configuration keys that define a run (not where or how verbosely it runs)."""
    ignore = {"output_dir", "verbose"}
    return json.loads(json.dumps({k: v for k, v in sorted(config.items()) if k not in ignore}))
