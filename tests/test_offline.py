"""No command reaches for the network: albumentations' update check on import is turned off
inside unetseg, and a command that tried to connect anywhere would fail this test."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from conftest import REPO, repo_pythonpath

# Run the CLI with every internet connection and name lookup refused and recorded; the
# attempts are printed at exit, because albumentations swallows the error it gets.
GUARDED_CLI = r"""
import atexit, socket, sys

attempts = []
plain_connect = socket.socket.connect

def connect(self, address):
    if self.family in (socket.AF_INET, socket.AF_INET6):
        attempts.append(f"connect {address}")
        raise OSError("network refused by the test")
    return plain_connect(self, address)  # local (Unix) sockets stay usable

def lookup(*args, **kwargs):
    attempts.append(f"getaddrinfo {args[:2]}")
    raise OSError("network refused by the test")

socket.socket.connect = connect
socket.socket.connect_ex = connect
socket.getaddrinfo = lookup
atexit.register(lambda: attempts and print("NETWORK ATTEMPTS: " + "; ".join(attempts), file=sys.stderr))
from unetseg.cli import main
main(sys.argv[1:], prog_name="unetseg")
"""


def run_offline(*args: object) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "NO_ALBUMENTATIONS_UPDATE"}
    env.update(PYTHONPATH=repo_pythonpath(), OMP_NUM_THREADS="1")
    return subprocess.run(
        [sys.executable, "-c", GUARDED_CLI, *map(str, args)],
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
        cwd=REPO,
    )


def test_help_train_and_predict_open_no_connection(tiny_cfg_file: Path, pair_dirs, tmp_path: Path) -> None:
    run = tmp_path / "offline_run"
    masks = tmp_path / "offline_masks"
    for args in (
        ["--help"],
        ["train", "--config", tiny_cfg_file, "--out", run, "--set", "train.epochs=1"],
        ["predict", pair_dirs[0], "--checkpoint", run / "checkpoints" / "best.pt", "--out", masks],
    ):
        proc = run_offline(*args)
        assert proc.returncode == 0, (args, proc.stderr[-2000:])
        assert "NETWORK ATTEMPTS" not in proc.stderr, (args[0], proc.stderr[-2000:])
        assert "check for updates" not in proc.stderr
    assert len(list(masks.iterdir())) == 6
