"""Checkpoints: round trip, atomic save, refusal of broken, foreign and code-carrying files."""

from __future__ import annotations

import copy
from pathlib import Path

import numpy as np
import pytest
import torch

from unetseg.config import config_from_dict, dump_config
from unetseg.models import build_model
from unetseg.models.checkpoint import FORMAT, CheckpointError, load_checkpoint, load_model, save_checkpoint


class Payload:
    """An arbitrary object: unpickling it would run code (here: create a marker file)."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def _model_state(cfg_dict: dict) -> tuple[torch.nn.Module, dict]:
    cfg = config_from_dict(cfg_dict)
    torch.manual_seed(1)
    model = build_model(cfg.model, cfg.data.channels, cfg.data.out_channels)
    # make BN running stats non-trivial, so they must travel too
    model.train()
    with torch.no_grad():
        model(torch.rand(2, 1, 32, 32))
    return model.eval(), {"config": dump_config(cfg), "model": model.state_dict(), "epoch": 3}


def test_round_trip(tmp_path, tiny_cfg_dict):
    _, state = _model_state(tiny_cfg_dict)
    state["history"] = [{"epoch": 1, "train_loss": 0.5}]
    state["best"] = {"value": None, "epoch": 0}
    path = tmp_path / "ckpt" / "last.pt"
    save_checkpoint(path, state)
    loaded = load_checkpoint(path)
    assert loaded["format"] == FORMAT
    assert loaded["epoch"] == 3 and loaded["history"] == state["history"] and loaded["best"] == state["best"]
    assert loaded["config"] == state["config"]
    assert loaded["model"].keys() == state["model"].keys()
    assert all(torch.equal(loaded["model"][k], v) for k, v in state["model"].items())
    assert [p.name for p in path.parent.iterdir()] == ["last.pt"]  # no temporary file left


def test_failed_save_keeps_previous_checkpoint(tmp_path, monkeypatch):
    path = tmp_path / "last.pt"
    save_checkpoint(path, {"epoch": 1})
    real_save = torch.save

    def broken_save(obj, fh, *a, **k):
        fh.write(b"partial")
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", broken_save)
    with pytest.raises(OSError, match="disk full"):
        save_checkpoint(path, {"epoch": 2})
    monkeypatch.setattr(torch, "save", real_save)
    assert load_checkpoint(path)["epoch"] == 1
    assert [p.name for p in tmp_path.iterdir()] == ["last.pt"]


def test_missing_file(tmp_path):
    with pytest.raises(CheckpointError, match="no such checkpoint"):
        load_checkpoint(tmp_path / "nope.pt")


@pytest.mark.parametrize("fraction", [0.05, 0.5, 0.95])
def test_truncated_file(tmp_path, tiny_cfg_dict, fraction):
    _, state = _model_state(tiny_cfg_dict)
    path = tmp_path / "full.pt"
    save_checkpoint(path, state)
    data = path.read_bytes()
    cut = tmp_path / "cut.pt"
    cut.write_bytes(data[: int(len(data) * fraction)])
    with pytest.raises(CheckpointError, match="cut.pt"):
        load_checkpoint(cut)
    with pytest.raises(CheckpointError):
        load_model(cut)


@pytest.mark.filterwarnings("ignore::UserWarning")  # torch warns about odd pickle protocols
def test_random_bytes(tmp_path):
    """Garbage of many kinds (some of it parses as a legacy pickle header) is always a
    CheckpointError naming the file, never another exception."""
    escaped = []
    for seed in range(300):
        rng = np.random.default_rng(seed)
        path = tmp_path / "noise.pt"
        path.write_bytes(rng.bytes(int(rng.integers(1, 4000))))
        try:
            load_checkpoint(path)
        except CheckpointError as err:
            assert "noise.pt" in str(err) and "weights_only" not in str(err)
        except Exception as err:
            escaped.append((seed, type(err).__name__))
        else:
            escaped.append((seed, "loaded"))
    assert not escaped


def test_empty_file(tmp_path):
    path = tmp_path / "empty.pt"
    path.write_bytes(b"")
    with pytest.raises(CheckpointError):
        load_checkpoint(path)


def test_pickled_object_is_refused_and_not_run(tmp_path):
    marker = tmp_path / "code_ran"
    path = tmp_path / "evil.pt"
    torch.save({"format": FORMAT, "model": {}, "payload": Payload(marker)}, path)
    with pytest.raises(CheckpointError, match="evil.pt") as info:
        load_checkpoint(path)
    assert not marker.exists()
    # Issue #27: torch's own message advises retrying with weights_only=False; ours must not.
    assert "weights_only" not in str(info.value) and "trusted source" not in str(info.value)
    assert "refused: it holds pickled Python code or objects (getattr)" in str(info.value)


def test_foreign_checkpoints_refused(tmp_path):
    torch.save({"state_dict": {"w": torch.ones(2)}}, tmp_path / "foreign.pt")
    with pytest.raises(CheckpointError, match="not a unetseg checkpoint"):
        load_checkpoint(tmp_path / "foreign.pt")
    torch.save([1, 2, 3], tmp_path / "list.pt")
    with pytest.raises(CheckpointError, match="not a unetseg checkpoint"):
        load_checkpoint(tmp_path / "list.pt")


def test_load_model_rebuilds_same_outputs(tmp_path, tiny_cfg_dict):
    tree = copy.deepcopy(tiny_cfg_dict)
    tree["model"].update({"skips": ["add", "none"], "encoder": "preact", "upsample": "bilinear"})
    model, state = _model_state(tree)
    save_checkpoint(tmp_path / "m.pt", state)
    loaded, cfg, raw = load_model(tmp_path / "m.pt")
    assert not loaded.training
    assert cfg == config_from_dict(tree) and raw["epoch"] == 3
    x = torch.rand(1, 1, 45, 37)
    with torch.no_grad():
        assert torch.equal(loaded(x), model(x))
    fresh = build_model(cfg.model, 1, 1).eval()
    with torch.no_grad():
        assert not torch.allclose(fresh(x), model(x))  # the weights, not the init, were restored


def test_load_model_reference_architecture(tmp_path, tiny_cfg_dict):
    tree = copy.deepcopy(tiny_cfg_dict)
    tree["model"] = {"arch": "monai_basicunet", "features": [4, 4, 8, 8, 16, 4]}
    model, state = _model_state(tree)
    save_checkpoint(tmp_path / "b.pt", state)
    loaded, _, _ = load_model(tmp_path / "b.pt")
    x = torch.rand(1, 1, 33, 50)
    with torch.no_grad():
        assert torch.equal(loaded(x), model(x))


def test_weights_not_matching_config(tmp_path, tiny_cfg_dict):
    _, state = _model_state(tiny_cfg_dict)
    state["config"]["model"]["base_width"] = 8
    save_checkpoint(tmp_path / "w.pt", state)
    with pytest.raises(CheckpointError, match="do not fit") as err:
        load_model(tmp_path / "w.pt")
    assert "\n" not in str(err.value) and "more)" in str(err.value)  # one line, not torch's list of every tensor


@pytest.mark.parametrize("key", ["config", "model"])
def test_tampered_sections_are_a_checkpoint_error(tmp_path, tiny_cfg_dict, key):
    _, state = _model_state(tiny_cfg_dict)
    state[key] = "oops"
    save_checkpoint(tmp_path / "t.pt", state)
    with pytest.raises(CheckpointError, match=r"t\.pt: (embedded config unusable|no model weights)"):
        load_model(tmp_path / "t.pt")


def test_unusable_embedded_config(tmp_path, tiny_cfg_dict):
    _, state = _model_state(tiny_cfg_dict)
    state["config"]["model"]["depht"] = 3
    save_checkpoint(tmp_path / "c.pt", state)
    with pytest.raises(CheckpointError, match="(?s)embedded config.*model.depht"):
        load_model(tmp_path / "c.pt")
    del state["config"]
    save_checkpoint(tmp_path / "n.pt", state)
    with pytest.raises(CheckpointError, match="embedded config"):
        load_model(tmp_path / "n.pt")


def _save_then_die(path: Path, where: str) -> None:
    """In a forked child: save epoch 1, then get SIGKILLed inside the save of epoch 2."""
    import os
    import signal

    save_checkpoint(path, {"epoch": 1, "w": torch.ones(1000)})

    def die(*_args, **_kwargs):
        os.kill(os.getpid(), signal.SIGKILL)

    if where == "mid-write":

        def partial_save(obj, fh, *args, **kwargs):
            fh.write(b"PK\x03\x04 the first bytes of a zip")
            fh.flush()
            die()

        torch.save = partial_save
    else:  # the temporary file is complete and synced, the rename has not happened
        os.replace = die
    save_checkpoint(path, {"epoch": 2, "w": torch.zeros(1000)})


@pytest.mark.parametrize("where", ["mid-write", "before-rename"])
def test_kill_during_save_leaves_the_previous_checkpoint(tmp_path, where):
    import multiprocessing as mp
    import signal

    path = tmp_path / "last.pt"
    child = mp.get_context("fork").Process(target=_save_then_die, args=(path, where))
    child.start()
    child.join(60)
    assert child.exitcode == -signal.SIGKILL
    state = load_checkpoint(path)
    assert state["epoch"] == 1 and torch.equal(state["w"], torch.ones(1000))
    leftovers = [p.name for p in tmp_path.iterdir() if p.name != "last.pt"]
    assert len(leftovers) == 1 and leftovers[0].startswith(".last.pt.") and leftovers[0].endswith(".tmp")
    save_checkpoint(path, {"epoch": 2})  # the leftover does not stand in the way of the next save
    assert load_checkpoint(path)["epoch"] == 2


def test_checkpoint_gets_a_plain_files_permissions(tmp_path):
    import os

    save_checkpoint(tmp_path / "c.pt", {"epoch": 1})
    (tmp_path / "plain").write_bytes(b"")
    assert os.stat(tmp_path / "c.pt").st_mode == os.stat(tmp_path / "plain").st_mode  # not mkstemp's 0600
