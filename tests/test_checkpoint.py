import pickle

import pytest
import torch

from cnnlab.errors import CheckpointError
from cnnlab.train import load_checkpoint, save_checkpoint

MINIMAL = {"model": {"name": "lenet5"}, "model_state": {"w": torch.ones(2)}, "preprocessing": {}, "classes": ["a"]}


def test_round_trip_with_weights_only(tmp_path):
    path = save_checkpoint(MINIMAL, tmp_path / "c.pt")
    loaded = load_checkpoint(path)
    assert torch.equal(loaded["model_state"]["w"], torch.ones(2)) and loaded["format"] == "cnnlab-checkpoint"
    assert [p.name for p in tmp_path.iterdir()] == ["c.pt"]  # no temporary file left behind


def test_failed_write_keeps_the_previous_checkpoint(tmp_path, monkeypatch):
    path = save_checkpoint(MINIMAL, tmp_path / "c.pt")
    before = path.read_bytes()

    def disk_full(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(torch, "save", disk_full)
    with pytest.raises(CheckpointError, match="No space left.*previous checkpoint at .* is intact"):
        save_checkpoint({**MINIMAL, "classes": ["b"]}, path)
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["c.pt"]


def test_missing_checkpoint(tmp_path):
    with pytest.raises(CheckpointError, match="does not exist"):
        load_checkpoint(tmp_path / "nope.pt")
    with pytest.raises(CheckpointError, match="directory without a checkpoint.pt"):
        load_checkpoint(tmp_path)


def test_truncated_checkpoint(tmp_path):
    path = save_checkpoint(MINIMAL, tmp_path / "c.pt")
    path.write_bytes(path.read_bytes()[:200])
    with pytest.raises(CheckpointError, match="truncated or corrupt"):
        load_checkpoint(path)


def test_not_a_cnnlab_checkpoint(tmp_path):
    torch.save({"weight": torch.ones(1)}, tmp_path / "plain.pt")
    with pytest.raises(CheckpointError, match="not a cnnlab checkpoint.*plain state_dict"):
        load_checkpoint(tmp_path / "plain.pt")
    torch.save(torch.nn.Linear(1, 1), tmp_path / "module.pt")  # a pickled object: refused by weights_only
    with pytest.raises(CheckpointError, match="not a cnnlab checkpoint"):
        load_checkpoint(tmp_path / "module.pt")
    (tmp_path / "text.pt").write_text("hello")
    with pytest.raises(CheckpointError, match="truncated or corrupt|not a cnnlab"):
        load_checkpoint(tmp_path / "text.pt")
    with open(tmp_path / "pickle.pt", "wb") as handle:
        pickle.dump({"format": "cnnlab-checkpoint"}, handle)
    with pytest.raises(CheckpointError):
        load_checkpoint(tmp_path / "pickle.pt")
