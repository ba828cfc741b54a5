"""One training per run folder: the lock file, its stale takeover, and every way into a folder
(the Trainer, ``unetseg train`` twice at once, DDP ranks, cross-validation folds)."""

from __future__ import annotations

import copy
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import repo_pythonpath, write_yaml

from unetseg.config import config_from_dict
from unetseg.training import Trainer, TrainingError, runlock
from unetseg.training.runlock import LOCK_NAME, RunLock, RunLockedError, pid_alive


@pytest.fixture
def live_pid():
    """The PID of a process that runs for the whole test (not this one)."""
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
    yield proc.pid
    proc.kill()
    proc.wait()


def dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    assert not pid_alive(proc.pid)
    return proc.pid


def write_lock(folder: Path, pid: int, host: str | None = None, beat_age_s: float | None = None) -> Path:
    """A lock as its owner writes it; ``beat_age_s`` makes it a beating owner's lock whose last
    heartbeat (the file's modification time) is that many seconds old."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / LOCK_NAME
    owner = {"pid": pid, "host": host or socket.gethostname(), "started": time.time() - 3600}
    if beat_age_s is not None:
        owner["heartbeat_s"] = runlock.HEARTBEAT_S
    path.write_text(json.dumps(owner))
    if beat_age_s is not None:
        then = time.time() - beat_age_s
        os.utime(path, (then, then))
    return path


def fit(tree: dict, resume: bool = False, log=lambda *_: None, trainer_cls=Trainer) -> dict:
    return trainer_cls(config_from_dict(tree), resume=resume, log=log).fit()


# --------------------------------------------------------------------------- the lock alone


def test_lock_records_its_owner_and_is_removed_on_release(tmp_path):
    with RunLock(tmp_path) as lock:
        owner = json.loads(lock.path.read_text())
        assert owner["pid"] == os.getpid() and owner["host"] == socket.gethostname()
        with pytest.raises(RunLockedError, match=f"{tmp_path}.*in use.*process {os.getpid()}"):
            RunLock(tmp_path).acquire()  # a second claim, even from this process (flock is per open file)
    assert not (tmp_path / LOCK_NAME).exists()


def test_live_lock_is_refused_naming_folder_and_pid(tmp_path, live_pid):
    path = write_lock(tmp_path, live_pid)
    with pytest.raises(RunLockedError, match=rf"{tmp_path} is in use .*process {live_pid} on .*still running.*delete"):
        RunLock(tmp_path).acquire()
    assert json.loads(path.read_text())["pid"] == live_pid  # left alone


@pytest.mark.parametrize("beat_age_s", [None, 5.0, runlock.STALE_AFTER_S - 30])
def test_lock_of_another_host_that_beats_or_never_beat_is_refused(tmp_path, beat_age_s):
    path = write_lock(tmp_path, dead_pid(), host="elsewhere.example", beat_age_s=beat_age_s)
    before = path.read_bytes()
    with pytest.raises(RunLockedError, match="on elsewhere.example.*cannot see that host"):
        RunLock(tmp_path).acquire()
    assert path.read_bytes() == before


def test_lock_of_another_host_whose_heartbeat_stopped_is_taken_over(tmp_path):
    """A preempted job's lock on a shared file system: its node is gone, its beat stopped."""
    path = write_lock(tmp_path, 4242, host="node-17.cluster", beat_age_s=runlock.STALE_AFTER_S + 60)
    notes: list[str] = []
    with RunLock(tmp_path, notes.append):
        owner = json.loads(path.read_text())
        assert (owner["pid"], owner["host"]) == (os.getpid(), socket.gethostname())
    assert len(notes) == 1
    assert "process 4242 on node-17.cluster" in notes[0] and "heartbeat stopped 36" in notes[0]
    assert not path.exists()


def test_a_held_lock_beats_until_released(tmp_path, monkeypatch):
    monkeypatch.setattr(runlock, "HEARTBEAT_S", 0.05)
    lock = RunLock(tmp_path).acquire()
    path = tmp_path / LOCK_NAME
    old = time.time() - 1000
    os.utime(path, (old, old))
    time.sleep(0.5)
    assert time.time() - path.stat().st_mtime < 1.0  # renewed by the heartbeat thread
    lock.release()
    assert lock._beat is None and not path.exists()


@pytest.mark.parametrize("content", ["dead", "", "not json"])
def test_stale_lock_is_taken_over_with_a_message(tmp_path, content):
    path = tmp_path / LOCK_NAME
    if content == "dead":
        pid = dead_pid()
        write_lock(tmp_path, pid)
    else:  # a run killed between creating the lock and writing its owner
        path.write_text(content)
    notes: list[str] = []
    with RunLock(tmp_path, notes.append):
        assert json.loads(path.read_text())["pid"] == os.getpid()
    assert len(notes) == 1 and "no longer running; taking the run folder over" in notes[0]
    if content == "dead":
        assert f"process {pid}" in notes[0]


# --------------------------------------------------------------------------- training


def test_training_into_a_locked_folder_writes_nothing(tiny_cfg_dict, live_pid):
    out = Path(tiny_cfg_dict["output_dir"])
    write_lock(out, live_pid)
    with pytest.raises(TrainingError, match=f"in use .*process {live_pid}"):
        fit(tiny_cfg_dict)
    assert sorted(p.name for p in out.iterdir()) == [LOCK_NAME]


class CheckLockDuringEpoch(Trainer):
    """Looks at the lock after epoch 1, then stops as a crash would."""

    def _record(self, row, logger):
        super()._record(row, logger)
        owner = json.loads((self.out_dir / LOCK_NAME).read_text())
        assert owner["pid"] == os.getpid()
        raise KeyboardInterrupt


def test_lock_is_held_while_training_and_released_by_an_exception(tiny_cfg_dict):
    with pytest.raises(KeyboardInterrupt):
        fit(tiny_cfg_dict, trainer_cls=CheckLockDuringEpoch)
    out = Path(tiny_cfg_dict["output_dir"])
    assert not (out / LOCK_NAME).exists()
    messages: list[str] = []
    fit(tiny_cfg_dict, resume=True, log=messages.append)  # no stale-lock note: nothing was left behind
    assert not any("no longer running" in m for m in messages) and not (out / LOCK_NAME).exists()


def test_resume_takes_over_the_lock_of_a_killed_run(tiny_cfg_dict):
    tree = copy.deepcopy(tiny_cfg_dict)
    tree["train"]["epochs"] = 1
    fit(tree)
    tree["train"]["epochs"] = 2
    pid = dead_pid()
    write_lock(Path(tree["output_dir"]), pid)  # what kill -9 leaves
    messages: list[str] = []
    summary = fit(tree, resume=True, log=messages.append)
    assert summary["history"][-1]["epoch"] == 2
    assert any(f"process {pid}" in m and "taking the run folder over" in m for m in messages)


def test_cross_validation_folds_are_locked(tiny_cfg_dict, live_pid):
    from unetseg.training.crossval import train_folds

    write_lock(Path(tiny_cfg_dict["output_dir"]) / "fold0", live_pid)
    with pytest.raises(TrainingError, match=f"fold0 is in use .*process {live_pid}"):
        train_folds(config_from_dict(tiny_cfg_dict), 3, log=lambda *_: None)


def test_ddp_rank_zero_alone_locks_and_every_rank_hears_a_refusal(tiny_cfg_dict, tmp_path, live_pid):
    from test_distributed import run_ranks

    out = Path(tiny_cfg_dict["output_dir"])
    write_lock(out, live_pid)
    outcomes = run_ranks(tmp_path, fit, tiny_cfg_dict)
    assert all(o.startswith("TrainingError") and f"process {live_pid}" in o for o in outcomes), outcomes
    (out / LOCK_NAME).unlink()
    outcomes = run_ranks(tmp_path, fit, tiny_cfg_dict)  # rank 1 does not lock, so it does not refuse rank 0
    assert outcomes == ["ok", "ok"], outcomes
    assert not (out / LOCK_NAME).exists()


def test_two_trainings_into_one_folder_at_once(tiny_cfg_dict, tmp_path):
    """The issue's case: ``unetseg train --out run`` twice at once. The second is refused
    while the first runs and leaves its config alone; after a ``kill -9`` of the first,
    ``--resume`` takes the folder over."""
    from click.testing import CliRunner

    from unetseg.cli import main

    tree = copy.deepcopy(tiny_cfg_dict)
    tree["train"].update({"epochs": 200, "device": "cpu"})
    config = write_yaml(tmp_path / "first.yaml", tree)
    out = Path(tree["output_dir"])
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": repo_pythonpath()}
    first = subprocess.Popen(
        [sys.executable, "-m", "unetseg", "train", "--config", str(config), "--no-check"],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        metrics = out / "metrics.csv"  # written just after the first checkpoint
        deadline = time.monotonic() + 120
        while not (metrics.exists() and len(metrics.read_text().splitlines()) >= 2):
            assert first.poll() is None, first.stderr.read().decode()
            assert time.monotonic() < deadline, "no checkpoint after 120 s"
            time.sleep(0.05)
        # A new run is refused by the existing checkpoint (or, earlier, by the lock); a --resume
        # passes that check, so only the lock stands between it and the running first run.
        result = CliRunner().invoke(main, ["train", "--config", str(config), "--no-check", "--set", "seed=7"])
        assert result.exit_code == 1 and "Traceback" not in result.output, result.output
        result = CliRunner().invoke(
            main, ["train", "--config", str(config), "--no-check", "--resume", "--set", "seed=7"]
        )
        assert result.exit_code == 1, result.output
        assert f"{out} is in use by another training (process {first.pid}" in result.output
        assert "Traceback" not in result.output
        assert "seed: 3" in (out / "config.yaml").read_text()
    finally:
        os.kill(first.pid, signal.SIGKILL)
        first.wait()
        first.stderr.close()
    assert (out / LOCK_NAME).exists()
    from unetseg.models.checkpoint import load_checkpoint

    tree["train"]["epochs"] = load_checkpoint(out / "checkpoints" / "last.pt")["epoch"] + 1
    write_yaml(config, tree)
    result = CliRunner().invoke(main, ["train", "--config", str(config), "--no-check", "--resume"])
    assert result.exit_code == 0, result.output
    assert f"locked by process {first.pid}" in result.output and "taking the run folder over" in result.output
    assert not (out / LOCK_NAME).exists()
