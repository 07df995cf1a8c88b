import pytest
import torch

from sds3d.checkpoint import CheckpointError, load_checkpoint, save_checkpoint


def test_round_trip_is_data_only(tmp_path):
    state = {"step": 3, "field": {"w": torch.arange(4.0)}, "rng": torch.Generator().get_state()}
    save_checkpoint(state, tmp_path / "ckpt" / "last.pt")
    loaded = load_checkpoint(tmp_path / "ckpt" / "last.pt")
    assert loaded["step"] == 3 and torch.equal(loaded["field"]["w"], torch.arange(4.0))


def test_a_killed_write_leaves_the_previous_checkpoint_loadable(tmp_path, monkeypatch):
    path = tmp_path / "last.pt"
    save_checkpoint({"step": 1, "x": torch.ones(3)}, path)

    def dying_save(obj, f, *a, **k):
        f.write(b"PK\x03\x04 half a zip")  # the process dies mid-write
        raise KeyboardInterrupt

    monkeypatch.setattr(torch, "save", dying_save)
    with pytest.raises(KeyboardInterrupt):
        save_checkpoint({"step": 2, "x": torch.zeros(3)}, path)
    monkeypatch.undo()
    assert load_checkpoint(path)["step"] == 1
    assert [p.name for p in tmp_path.iterdir()] == ["last.pt"]  # the half-written temporary is gone too


def test_corrupt_and_missing_checkpoints_are_clear_errors(tmp_path):
    bad = tmp_path / "last.pt"
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="corrupt or truncated"):
        load_checkpoint(bad)
    with pytest.raises(CheckpointError, match="no checkpoint"):
        load_checkpoint(tmp_path / "missing.pt")


def test_code_in_a_checkpoint_is_not_executed(tmp_path):
    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))

    path = tmp_path / "evil.pt"
    torch.save({"step": 0, "payload": Evil()}, path)
    with pytest.raises(CheckpointError):
        load_checkpoint(path)
