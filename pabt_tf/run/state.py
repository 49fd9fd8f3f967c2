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

A run resumes only as the same run: `progress.json` also records what the data was
(`data_record`: data set, class names in label order, split sizes, a fingerprint of the
examples), and a resume with another configuration or other data is refused, naming what
changed. A finished run (its `results.json` written) is not trained again unless asked
(`reset` clears the run's files first).
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
RESULTS = "results.json"
# What a run writes into its directory (`reset` removes these and nothing else).
RUN_FILES = (RESULTS, "history.json", PROGRESS, "pruning.png", "model.keras", "model.tflite")
RUN_FOLDERS = (BACKUP, "checkpoints", "tensorboard", "teacher")


class RunDirectoryError(RuntimeError):
    """A run directory that cannot be used as asked: held by another live process, a
    record of finished epochs without their checkpoint, ... The programs print its
    message and exit with status 2 (no traceback)."""


class RunMismatchError(RunDirectoryError, ValueError):
    """The run directory holds a run with another configuration or other data."""


class RunRecordError(RunDirectoryError, ValueError):
    """A run's record (`progress.json`, `results.json`) is not what this code writes:
    not JSON, or values of the wrong type."""


class RunLock:
    """Exclusive use of a run directory by one process (`run.lock` holds its pid).

    Two processes training into one run directory (two `compare` invocations on the same
    output) would overwrite each other's checkpoints and progress; the second one fails
    instead. A lock left by a process that no longer exists (killed) is taken over.

    # Raises
        RunDirectoryError: on `__enter__`, if a live process holds the lock.
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
                    raise RunDirectoryError(
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
        data: what the run's data is (`data_record`); a resumed run must have the same.

    # Raises
        RunRecordError: `progress.json` is not JSON or not a progress record (names it).
        RunMismatchError: `progress.json` belongs to a run with another configuration or
            other data (names what changed).
        RunDirectoryError: `progress.json` records finished epochs but `backup/` holds no
            checkpoint of them.
    """

    def __init__(self, run_dir: str, config: dict[str, Any], recorders: dict[str, Any],
                 data: dict[str, Any] | None = None):
        super().__init__()
        self.path = os.path.join(run_dir, PROGRESS)
        self.config = _comparable(config)
        self.data = None if data is None else _plain(data)
        self.recorders = recorders
        self.state: dict[str, Any] = {"epochs_done": 0, "history": {}, "pieces": [], "recorders": {}}
        if os.path.exists(self.path):
            saved = read_progress(self.path)
            check_same_run(self.path, saved.get("config"), saved.get("data"), self.config, self.data)
            if saved["epochs_done"] > 0 and not has_backup(run_dir):
                # Without the weights the run would restart at epoch 0 while this record
                # claims finished epochs: a history and train time of two different runs.
                raise RunDirectoryError(
                    f"{self.path} records {saved['epochs_done']} finished epoch(s) but "
                    f"{os.path.join(run_dir, BACKUP)} holds no checkpoint to resume them "
                    "from (deleted, or the directory was copied without it); train it "
                    "over with force=True (--force), which first deletes the run's files, "
                    "or use another output directory."
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
        if self.data is not None:
            self.state["data"] = self.data
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


def finished_results(run_dir: str) -> dict[str, Any] | None:
    """The `results.json` of a finished run in `run_dir`, or None if there is none.

    # Raises
        RunRecordError: `results.json` is not a JSON object (names it).
    """
    path = os.path.join(run_dir, RESULTS)
    if not os.path.exists(path):
        return None
    try:
        results = read_json(path)
    except ValueError as err:
        raise RunRecordError(f"{err} It is the record of a finished run; to train the run "
                             "over, use force=True (--force).") from None
    if not isinstance(results, dict) or not isinstance(results.get("config"), dict):
        raise RunRecordError(f"{path}: expected a run's results (a JSON object with its "
                             "'config'); to train the run over, use force=True (--force).")
    return results


def check_finished_run(run_dir: str, config: dict[str, Any], data: dict[str, Any] | None,
                       results: dict[str, Any]) -> None:
    """Check that the finished run in `run_dir` is the run `config` and `data` describe.

    Compares with what `progress.json` recorded (the configuration as asked for), or,
    without one, with the configuration in `results` (whose `decay_steps` the run may
    have capped).

    # Raises
        RunMismatchError: naming what differs; RunRecordError: a malformed record.
    """
    progress = os.path.join(run_dir, PROGRESS)
    if os.path.exists(progress):
        saved = read_progress(progress)
        check_same_run(progress, saved.get("config"), saved.get("data"),
                       _comparable(config), None if data is None else _plain(data),
                       finished=True)
        return
    saved_config = {k: v for k, v in _comparable(results["config"]).items() if k != "decay_steps"}
    wanted = {k: v for k, v in _comparable(config).items() if k != "decay_steps"}
    check_same_run(os.path.join(run_dir, RESULTS), saved_config, results.get("data"), wanted,
                   None if data is None else _plain(data), finished=True)


def check_same_run(path: str, saved_config, saved_data, config, data, finished=False) -> None:
    """Refuse a run directory whose record (`path`) is of another run.

    A key only one side has is not compared: it comes from another version of the code
    (every run records every key of its version's configuration).

    # Raises
        RunMismatchError: naming each configuration key or data property that changed.
    """
    changes = _differences(saved_config or {}, config)
    what = "another configuration"
    if not changes and saved_data is not None and data is not None:
        changes, what = _differences(saved_data, data), "other data"
    if changes:
        kind = "a finished run" if finished else "a run"
        raise RunMismatchError(
            f"{path} belongs to {kind} with {what}: " + "; ".join(changes) + ". "
            "Use another output directory, or train over it with force=True (--force), "
            "which first deletes the run's files."
        )


def _differences(saved: dict[str, Any], now: dict[str, Any]) -> list[str]:
    out = []
    for key in sorted(set(saved) | set(now)):
        if key not in saved or key not in now or saved[key] == now[key]:
            continue  # the same, or a key only one version of the code records
        if key == "classes" and len(saved[key]) == len(now[key]):
            renamed = [f"{a!r} -> {b!r}" for a, b in zip(saved[key], now[key]) if a != b]
            out.append(f"classes (label order) changed: {', '.join(renamed)}")
            continue
        out.append(f"{key}: {_short(saved[key])} then, {_short(now[key])} now")
    return out


def _short(value: Any, limit: int = 120) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def reset(run_dir: str) -> list[str]:
    """Delete what a run wrote into `run_dir` (`RUN_FILES`, `RUN_FOLDERS`), so that it can
    be trained over; other files in the directory are left alone. `results.json` goes
    first: an interrupted reset leaves no finished-run record over missing files.

    # Returns
        The paths removed.
    """
    removed = []
    for name in RUN_FILES:
        path = os.path.join(run_dir, name)
        if os.path.lexists(path) and not os.path.isdir(path):
            os.remove(path)
            removed.append(path)
    for name in RUN_FOLDERS:
        path = os.path.join(run_dir, name)
        if os.path.isdir(path):
            shutil.rmtree(path)
            removed.append(path)
    return removed


def read_progress(path: str) -> dict[str, Any]:
    """A `progress.json`, checked.

    # Raises
        RunRecordError: naming `path`, if it is not JSON or its entries have the wrong
            types (a hand-edited or foreign file), before anything is resumed from it.
    """
    try:
        saved = read_json(path)
    except ValueError as err:
        raise RunRecordError(f"{err} To train the run over, use force=True (--force).") from None
    problem = _progress_problem(saved)
    if problem:
        raise RunRecordError(
            f"{path} is not a progress record of a run: {problem}. Repair it, or train the "
            "run over with force=True (--force), which first deletes the run's files."
        )
    return saved


def _progress_problem(saved: Any) -> str | None:
    if not isinstance(saved, dict):
        return f"expected a JSON object, found {type(saved).__name__}"
    done = saved.get("epochs_done")
    if isinstance(done, bool) or not isinstance(done, int) or done < 0:
        return f"'epochs_done' must be an integer >= 0, found {done!r}"
    types = {"history": dict, "pieces": list, "recorders": dict}
    for key, kind in types.items():
        if not isinstance(saved.get(key), kind):
            return f"{key!r} must be a JSON {'object' if kind is dict else 'array'}, found {saved.get(key)!r}"
    for key in ("config", "data"):
        if key in saved and not isinstance(saved[key], dict):
            return f"{key!r} must be a JSON object, found {saved[key]!r}"
    for key, values in saved["history"].items():
        if not isinstance(values, list) or len(values) < done or not all(
            isinstance(v, (int, float)) and not isinstance(v, bool) for v in values
        ):
            return f"history {key!r} must be {done} number(s), found {_short(values)}"
    for piece in saved["pieces"]:
        if not (isinstance(piece, dict) and _number(piece.get("start_epoch"))
                and _number(piece.get("seconds"))):
            return f"each piece must be {{'start_epoch': int, 'seconds': number}}, found {_short(piece)}"
    return None


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def data_record(ds: Any) -> dict[str, Any]:
    """What identifies a run's data (a `pabt_tf.data.Datasets`): its name, class names in
    label order, number of classes, input shape, split sizes and fingerprint."""
    return _plain({
        "dataset": ds.name,
        "classes": list(ds.classes),
        "num_classes": ds.num_classes,
        "input_shape": list(ds.input_shape),
        "train_size": ds.train_size,
        "validation_size": ds.validation_size,
        "test_size": ds.test_size,
        "fingerprint": getattr(ds, "fingerprint", ""),
    })


def _plain(value: Any) -> Any:
    return json.loads(json.dumps(value))


def _comparable(config: dict[str, Any]) -> dict[str, Any]:
    """The configuration keys that define a run (not where or how verbosely it runs)."""
    ignore = {"output_dir", "verbose"}
    return _plain({k: v for k, v in sorted(config.items()) if k not in ignore})
