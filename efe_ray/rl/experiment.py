"""The experiment folder of a search: one search at a time, the newest to resume, its own config.

A search writes everything under ``<storage>/<name>/``: Tune's ``tuner.pkl`` and
``experiment_state-*.json``, one folder per trial (``params.json``, ``result.json``,
``checkpoint_*``). Two searches in one folder overwrite each other's state, and Tune's restore
then continues whichever ``experiment_state`` file is newest. So:

- :class:`ExperimentLock` holds an ``fcntl`` lock on ``<folder>/.efe_search.lock`` while a search
  runs; the file names the holder (pid, host, start time, command). A second search or a
  ``--resume`` of the same folder is refused at once. The kernel drops the lock when its
  process ends, however it ends, so a lock file left behind by a killed search does not block.
  (On network file systems ``fcntl`` locks are only as reliable as the server's lock support.)
- :func:`newest_experiment` is what a bare ``--resume`` continues.
- :func:`save_config` writes the experiment config as ``efe_experiment.json`` when a search
  starts; :func:`stored_config` reads it back (or, for older folders, a trial's ``params.json``)
  so that a resumed search is checked and summarised with the settings that actually run.
"""

from __future__ import annotations

import fcntl
import json
import os
import shlex
import socket
import sys
import time
from pathlib import Path

LOCK_FILE = ".efe_search.lock"
CONFIG_FILE = "efe_experiment.json"
TUNER_FILE = "tuner.pkl"
"""What Tune writes first into an experiment folder (and restores from)."""


class ExperimentBusyError(RuntimeError):
    """Another live search holds the experiment folder."""


class ExperimentLock:
    """An exclusive, non-blocking lock on an experiment folder (see the module docstring)."""

    def __init__(self, folder: str | os.PathLike) -> None:
        self.folder = Path(folder)
        self.path = self.folder / LOCK_FILE
        self._fd: int | None = None

    def acquire(self) -> None:
        """Take the lock or raise ExperimentBusyError naming the holder."""
        self.folder.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.read(fd, 4096).decode(errors="replace")
            os.close(fd)
            raise ExperimentBusyError(f"experiment {self.folder} is in use by {describe_holder(holder)}; "
                                      "wait for that search to end (or stop it with Ctrl-C), then --resume") from None
        info = {"pid": os.getpid(), "host": socket.gethostname(), "started": time.strftime("%Y-%m-%d %H:%M:%S"),
                "command": shlex.join([Path(sys.executable).name, *sys.argv])}
        os.ftruncate(fd, 0)
        os.pwrite(fd, (json.dumps(info) + "\n").encode(), 0)
        self._fd = fd

    def release(self) -> None:
        """Drop the lock (the file stays; its content is only read while someone holds it)."""
        if self._fd is not None:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None

    def __enter__(self) -> ExperimentLock:
        self.acquire()
        return self

    def __exit__(self, *exc) -> None:
        self.release()


def describe_holder(text: str) -> str:
    """``"pid 123 on host h (since 2026-01-01 10:00:00: python -m efe_ray.tune ...)"`` from a lock file."""
    try:
        info = json.loads(text)
        return f"pid {info['pid']} on host {info['host']} (since {info['started']}: {info['command']})"
    except (json.JSONDecodeError, KeyError, TypeError):
        return "another process (its lock file could not be read)"


def is_experiment(folder: Path) -> bool:
    """Whether Tune has written an experiment into ``folder``."""
    return (folder / TUNER_FILE).is_file() or any(folder.glob("experiment_state-*.json"))


def last_saved(folder: Path) -> float:
    """When Tune last saved the experiment's state (modification time, seconds since the epoch)."""
    files = [*folder.glob("experiment_state-*.json"), folder / TUNER_FILE]
    return max((f.stat().st_mtime for f in files if f.is_file()), default=0.0)


def newest_experiment(storage: Path) -> Path:
    """The experiment under ``storage`` whose state was saved last (FileNotFoundError if none)."""
    found = [d for d in storage.iterdir() if d.is_dir() and is_experiment(d)] if storage.is_dir() else []
    if not found:
        raise FileNotFoundError(f"no experiment to resume under {storage} (pass --storage-path, or --name to start one)")
    return max(found, key=lambda d: (last_saved(d), d.name))


def save_config(folder: Path, config: dict) -> None:
    """Record the experiment config (a plain dict) a new search in ``folder`` starts with."""
    from efe_ray.data.files import atomic_write

    atomic_write(folder / CONFIG_FILE, (json.dumps(config, indent=1) + "\n").encode())


def stored_config(folder: Path) -> dict | None:
    """The experiment config (as a dict) ``folder``'s search was started with: its
    ``efe_experiment.json``, else a trial's ``params.json`` (trials differ only in the searched
    values), else None."""
    try:
        return json.loads((folder / CONFIG_FILE).read_text())
    except FileNotFoundError:
        pass
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ValueError(f"{folder / CONFIG_FILE}: not readable JSON ({err})") from err
    for params in sorted(folder.glob("*/params.json")):
        try:
            return json.loads(params.read_text())["env_config"]["experiment"]
        except (json.JSONDecodeError, KeyError, TypeError, OSError):
            continue
    return None


def resume_command(folder: Path, address: str | None = None) -> str:
    """This project's command that continues the experiment in ``folder``."""
    parts = ["python", "-m", "efe_ray.tune", "--resume", "--name", folder.name, "--storage-path", str(folder.parent)]
    if address:
        parts += ["--address", address]
    return shlex.join(parts)
