"""Data-parallel training: ``unetseg train`` under torchrun (gloo, 2 CPU processes), and the
DDP trainer's determinism, exact resume and shared stop decisions.

The torchrun test runs the real command line. The other multi-process tests fork the test
process into two ranks (no second import of torch, so each costs about a second) and run
``Trainer.fit`` in each, as torchrun's workers do.
"""

from __future__ import annotations

import copy
import csv
import importlib.util
import multiprocessing as mp
import os
import socket
import subprocess
import sys
import traceback
from pathlib import Path

import pytest
import torch
from conftest import repo_pythonpath, write_yaml

from unetseg.config import ConfigError, config_from_dict
from unetseg.models.checkpoint import load_checkpoint, load_model
from unetseg.training import Trainer, TrainingError
from unetseg.training.distributed import Distributed, rank_seed

WORLD = 2


def _rows(path: Path) -> list[dict]:
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _assert_same_weights(a: Path, b: Path) -> None:
    wa, wb = load_checkpoint(a)["model"], load_checkpoint(b)["model"]
    assert wa.keys() == wb.keys()
    different = [k for k in wa if not torch.equal(wa[k], wb[k])]
    assert not different, f"weights differ: {different[:5]}"


def _assert_same_rows(a: Path, b: Path) -> None:
    rows_a, rows_b = _rows(a), _rows(b)
    assert [r["epoch"] for r in rows_a] == [r["epoch"] for r in rows_b]
    for ra, rb in zip(rows_a, rows_b):
        assert {k: v for k, v in ra.items() if k not in ("train_img_per_s", "elapsed_s")} == {
            k: v for k, v in rb.items() if k not in ("train_img_per_s", "elapsed_s")
        }


# --------------------------------------------------------------------------- forked ranks


def _rank_main(rank: int, port: int, report: Path, fn, args) -> None:
    os.environ.update(
        RANK=str(rank),
        LOCAL_RANK=str(rank),
        WORLD_SIZE=str(WORLD),
        LOCAL_WORLD_SIZE=str(WORLD),
        MASTER_ADDR="127.0.0.1",
        MASTER_PORT=str(port),
    )
    torch.set_num_threads(1)
    try:
        fn(*args)
        outcome = "ok"
    except BaseException as err:
        outcome = f"{type(err).__name__}: {err}\n{traceback.format_exc()}"
    (report / f"rank{rank}.txt").write_text(outcome)


def run_ranks(tmp_path: Path, fn, *args, timeout: float = 120) -> list[str]:
    """``fn(*args)`` in WORLD forked processes joined in one gloo group; each rank's outcome."""
    report = tmp_path / f"ranks_{_free_port()}"
    report.mkdir()
    # Forking is fast (no second import of torch), but where a GPU is visible the first backward
    # pass, on any device, starts autograd's per-device threads, and a process that has them
    # cannot fork: spawn there (seen on an H200 under pytest -n: an earlier CPU test's backward
    # was enough).
    ctx = mp.get_context("spawn" if torch.cuda.is_available() else "fork")
    port = _free_port()
    procs = [ctx.Process(target=_rank_main, args=(r, port, report, fn, args)) for r in range(WORLD)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout)
    alive = [p for p in procs if p.is_alive()]
    for p in alive:
        p.kill()
    assert not alive, "a rank hung"
    return [
        (report / f"rank{r}.txt").read_text() if (report / f"rank{r}.txt").exists() else "died" for r in range(WORLD)
    ]


def fit(tree: dict, resume: bool = False, trainer_cls=Trainer) -> None:
    trainer_cls(config_from_dict(tree), resume=resume, log=lambda *_: None).fit()


class StopAfterFirstEpoch(Trainer):
    """Every rank stops right after epoch 1 was checkpointed and logged (as a kill would)."""

    def _record(self, row, logger):
        super()._record(row, logger)
        if row["epoch"] == 1:
            raise KeyboardInterrupt


def _nan_on_rank_one(tree: dict) -> None:
    import unetseg.training.trainer as trainer_module

    real = trainer_module.build_loss

    def build(cfg, out):
        loss = real(cfg, out)
        return (
            (lambda logits, target, weight=None: loss(logits, target, weight) * float("nan"))
            if os.environ["RANK"] == "1"
            else loss
        )

    trainer_module.build_loss = build
    fit(tree)


# --------------------------------------------------------------------------- helpers


def test_single_process_is_not_distributed(monkeypatch):
    for key in ("WORLD_SIZE", "RANK", "LOCAL_RANK"):
        monkeypatch.delenv(key, raising=False)
    d = Distributed("cpu")
    assert (d.world, d.rank, d.main, d.enabled) == (1, 0, True, False)
    model = torch.nn.Linear(2, 2)
    assert d.wrap(model) is model and d.sampler(range(10), 0, 0) is None and d.share(10) == 10
    value = torch.tensor(float("nan"))
    assert d.mean(value) is value and d.sum(3) == 3 and d.any(True) and d.broadcast({"a": 1}) == {"a": 1}
    d.barrier()
    d.close()
    monkeypatch.setenv("WORLD_SIZE", "1")  # torchrun --nproc_per_node=1: the plain loop
    assert not Distributed("cpu").enabled


@pytest.mark.parametrize("rank", [0, 1])
def test_more_processes_than_gpus_is_one_clear_error(monkeypatch, rank):
    """torchrun --nproc_per_node=2 on a one-GPU node: every process names the cause, rank 0
    (the one the CLI lets speak) included."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", str(rank))
    monkeypatch.setenv("LOCAL_RANK", str(rank))
    with pytest.raises(ConfigError, match=r"2 processes on this node but 1 GPU\(s\) visible.*nproc_per_node"):
        Distributed("auto")


def test_rank_shards_cover_the_epoch_and_depend_only_on_seed_and_epoch(monkeypatch):
    monkeypatch.setattr(Distributed, "__init__", lambda self: None)

    def shards(seed: int, epoch: int, n: int = 10) -> list[list[int]]:
        out = []
        for rank in range(WORLD):
            d = Distributed()
            d.world, d.rank = WORLD, rank
            out.append(list(d.sampler(range(n), seed, epoch)))
        return out

    a = shards(7, 3)
    assert len(a[0]) == len(a[1]) == 5 and sorted(a[0] + a[1]) == list(range(10))
    assert shards(7, 3) == a  # a function of (seed, epoch): a resumed epoch sees the same data
    assert shards(7, 4) != a and shards(8, 3) != a
    uneven = shards(7, 3, n=9)  # padded by wrapping: both ranks take the same number of steps
    assert len(uneven[0]) == len(uneven[1]) == 5 and set(uneven[0] + uneven[1]) == set(range(9))
    assert rank_seed(5, 0) == 5 and len({rank_seed(5, r) for r in range(4)}) == 4 and rank_seed(5, 1) == rank_seed(5, 1)


# --------------------------------------------------------------------------- torchrun


def _tensorboard_installed() -> bool:
    """Whether the training logger can write TensorBoard events (it imports this module, or writes none)."""
    return importlib.util.find_spec("tensorboard") is not None


def _torchrun(args: list[str], cwd: Path) -> subprocess.Popen:
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_PORT")}
    env.update(OMP_NUM_THREADS="1", PYTHONPATH=repo_pythonpath())
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        f"--nproc_per_node={WORLD}",
        "-m",
        "unetseg",
        *args,
    ]
    return subprocess.Popen(cmd, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def test_torchrun_two_processes_train_once_and_deterministically(tiny_cfg_dict, tmp_path):
    """``torchrun --standalone --nproc_per_node=2 -m unetseg train --config ...`` on gloo: one
    set of outputs written by rank 0, a checkpoint that loads in one process, and the same
    weights as a second DDP run of the same config (here the forked ranks, run meanwhile)."""
    tree = copy.deepcopy(tiny_cfg_dict)
    tree["model"]["dropout"] = 0.2
    tree["train"]["device"] = "cpu"
    config = write_yaml(tmp_path / "ddp.yaml", tree)
    proc = _torchrun(["train", "--config", str(config), "--out", str(tmp_path / "torchrun")], tmp_path)

    forked = copy.deepcopy(tree)
    forked["output_dir"] = str(tmp_path / "forked")
    assert run_ranks(tmp_path, fit, forked) == ["ok", "ok"]

    output, _ = proc.communicate(timeout=180)
    assert proc.returncode == 0, output
    out = tmp_path / "torchrun"
    assert output.count("done: best dice") == 1 and output.count("epoch 1 of 2 |") == 1, output
    assert "2 processes" in output
    written = sorted(p.relative_to(out) for p in out.rglob("*"))
    assert [str(p) for p in written if p.parts[0] != "tensorboard"] == [
        "checkpoints",
        "checkpoints/best.pt",
        "checkpoints/last.pt",
        "config.yaml",
        "metrics.csv",
    ]
    # Rank 0 alone logs to TensorBoard: one event file where it is installed, none where it is not.
    assert len(list(out.glob("tensorboard/events.*"))) == (1 if _tensorboard_installed() else 0)
    rows = _rows(out / "metrics.csv")
    assert [int(r["epoch"]) for r in rows] == [1, 2]
    assert all(int(r["train_images"]) == 8 for r in rows)  # samples_per_epoch stays global
    state = load_checkpoint(out / "checkpoints" / "last.pt")
    assert state["epoch"] == 2 and state["world_size"] == WORLD
    assert not any(k.startswith("module.") for k in state["model"])
    model, _, _ = load_model(out / "checkpoints" / "best.pt")
    assert model(torch.rand(1, 1, 40, 24)).shape == (1, 1, 40, 24)

    _assert_same_weights(out / "checkpoints" / "last.pt", tmp_path / "forked" / "checkpoints" / "last.pt")
    _assert_same_rows(out / "metrics.csv", tmp_path / "forked" / "metrics.csv")


# --------------------------------------------------------------------------- forked DDP runs


def _fit_with_random_validation(tree: dict, resume: bool = False, trainer_cls=Trainer) -> None:
    """``fit`` in a rank whose validation draws random numbers. Only rank 0 validates, so it
    must not shift its RNGs. Patched inside the rank: a spawned one inherits no patch."""
    import numpy as np

    import unetseg.training.trainer as trainer_module

    real_evaluate = trainer_module.evaluate

    def evaluate_drawing_random_numbers(*args, **kwargs):
        torch.rand(3), np.random.rand(3)
        return real_evaluate(*args, **kwargs)

    trainer_module.evaluate = evaluate_drawing_random_numbers
    try:
        fit(tree, resume, trainer_cls)
    finally:
        trainer_module.evaluate = real_evaluate


def test_ddp_resume_is_exact(tiny_cfg_dict, tmp_path):
    tree = copy.deepcopy(tiny_cfg_dict)
    tree["model"]["dropout"] = 0.2
    tree["augment"]["elastic"] = {"p": 0.5, "alpha": 30, "sigma": 4}
    tree["train"].update({"epochs": 3, "device": "cpu"})
    straight, stopped = copy.deepcopy(tree), copy.deepcopy(tree)
    straight["output_dir"], stopped["output_dir"] = str(tmp_path / "straight"), str(tmp_path / "stopped")

    assert run_ranks(tmp_path, _fit_with_random_validation, straight) == ["ok", "ok"]
    outcomes = run_ranks(tmp_path, _fit_with_random_validation, stopped, False, StopAfterFirstEpoch)
    assert all(o.startswith("KeyboardInterrupt") for o in outcomes), outcomes
    assert load_checkpoint(tmp_path / "stopped" / "checkpoints" / "last.pt")["epoch"] == 1
    assert run_ranks(tmp_path, _fit_with_random_validation, stopped, True) == ["ok", "ok"]

    _assert_same_weights(
        tmp_path / "straight" / "checkpoints" / "last.pt", tmp_path / "stopped" / "checkpoints" / "last.pt"
    )
    _assert_same_rows(tmp_path / "straight" / "metrics.csv", tmp_path / "stopped" / "metrics.csv")
    # and the two ranks really trained on different crops: a one-process run ends elsewhere
    single = copy.deepcopy(straight)
    single["output_dir"] = str(tmp_path / "single")
    fit(single)
    a = load_checkpoint(tmp_path / "single" / "checkpoints" / "last.pt")["model"]
    b = load_checkpoint(tmp_path / "straight" / "checkpoints" / "last.pt")["model"]
    assert any(not torch.equal(a[k], b[k]) for k in a)


def test_ddp_model_with_unused_parameters(tiny_cfg_dict, tmp_path):
    """An smp encoder cut to the U-Net's depth keeps layers the forward never reaches."""
    tree = copy.deepcopy(tiny_cfg_dict)
    tree["model"]["encoder"] = "smp:resnet18"
    tree["train"].update({"epochs": 1, "device": "cpu"})
    assert run_ranks(tmp_path, fit, tree) == ["ok", "ok"]
    assert load_checkpoint(Path(tree["output_dir"]) / "checkpoints" / "last.pt")["epoch"] == 1


def test_ddp_nan_on_one_rank_stops_every_rank(tiny_cfg_dict, tmp_path):
    tree = copy.deepcopy(tiny_cfg_dict)
    tree["train"]["device"] = "cpu"
    outcomes = run_ranks(tmp_path, _nan_on_rank_one, tree)
    for outcome in outcomes:
        assert outcome.startswith(f"{TrainingError.__name__}: loss became nan at epoch 1, step 1"), outcome
    assert not (Path(tree["output_dir"]) / "checkpoints" / "last.pt").exists()


def test_ddp_time_budget_stops_every_rank_together(tiny_cfg_dict, tmp_path):
    tree = copy.deepcopy(tiny_cfg_dict)
    tree["train"].update({"epochs": 50, "max_time_s": 1e-6, "device": "cpu"})
    assert run_ranks(tmp_path, fit, tree) == ["ok", "ok"]
    rows = _rows(Path(tree["output_dir"]) / "metrics.csv")
    assert len(rows) == 1 and int(rows[0]["train_images"]) == WORLD * 2  # one batch on each rank
    assert rows[0]["val_dice"]


def test_torchrun_worker_dies_with_its_launcher(tmp_path, monkeypatch):
    """torchrun puts workers in their own session; after ``kill -9`` of torchrun they must not
    go on training as orphans (a later --resume would run beside them)."""
    import signal
    import time

    from unetseg.training.distributed import die_with_launcher

    if not sys.platform.startswith("linux"):
        pytest.skip("PR_SET_PDEATHSIG is Linux-only")
    monkeypatch.setenv("TORCHELASTIC_RUN_ID", "test")
    pid_file = tmp_path / "worker.pid"
    launcher = os.fork()
    if launcher == 0:  # the "torchrun": starts a worker, then is killed
        try:
            worker = os.fork()
            if worker == 0:
                os.setsid()
                die_with_launcher()
                pid_file.write_text(str(os.getpid()))
                time.sleep(60)
                os._exit(0)
            while not pid_file.exists():
                time.sleep(0.01)
            time.sleep(0.05)
        finally:
            os.kill(os.getpid(), signal.SIGKILL)
    os.waitpid(launcher, 0)
    worker = int(pid_file.read_text())
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            os.kill(worker, 0)
        except ProcessLookupError:
            return
        try:
            with open(f"/proc/{worker}/stat") as fh:
                if fh.read().split(")")[-1].split()[0] == "Z":  # dead, waiting for init to reap it
                    return
        except FileNotFoundError:
            return
        time.sleep(0.05)
    os.kill(worker, signal.SIGKILL)
    pytest.fail("the worker outlived its launcher")
