"""Checkpoints: written atomically, read with clear errors, and a resumed run continues exactly.

These run the real training loop in-process (tiny model, 16×16 frames) so that they stay fast;
tests/test_train_cli.py does the same through the `cellgen` command, and kills a real run.
"""
from dataclasses import replace

import pytest
import torch

from cellgen.data.sources import DataConfig
from cellgen.errors import CellgenError
from cellgen.sequence import SequenceConfig
from cellgen.training import checkpoint as ckpt
from cellgen.training.config import TrainConfig
from cellgen.training.distributed import Distributed
from cellgen.training.trainer import Run, train

MODEL = SequenceConfig.for_spec("predrnn", params={"hidden": 4, "k": 3}, layers=2, patch=4, frame_size=(16, 16))
DATA = DataConfig("moving-digits", frame_size=16, context=4, future=4, test_sequences=4)
TRAIN = TrainConfig(steps=4, batch_size=2, lr=3e-3, seed=5, scheduled_sampling=3, eval_every=2, eval_sequences=2,
                    eval_batch_size=2, picture_sequences=1)


pytestmark = pytest.mark.usefixtures("one_thread")


def run(out, steps, resume=None):
    return train(Run(out, MODEL, DATA, replace(TRAIN, steps=steps), Distributed(), resume, show_progress=False))


def test_resume_gives_the_same_next_losses_as_an_uninterrupted_run(tmp_path):
    whole = run(tmp_path / "whole", 4)
    run(tmp_path / "split", 2)
    halfway = ckpt.load_checkpoint(tmp_path / "split")
    assert halfway["step"] == 2
    resumed = run(tmp_path / "split", 4, resume=halfway)
    # scheduled sampling is on (η = 1/3 at step 2), so the coins must be the same too
    assert [step for step, _ in resumed["loss"]] == [1, 2, 3, 4]
    assert resumed["loss"] == whole["loss"]          # bit for bit: same data, same coins, same state
    assert resumed["evaluations"] == whole["evaluations"]
    final = ckpt.load_checkpoint(tmp_path / "split")
    reference = ckpt.load_checkpoint(tmp_path / "whole")
    for name, tensor in reference["model"].items():
        assert torch.equal(final["model"][name], tensor), name


def test_checkpoint_round_trip_and_model_rebuild(tmp_path):
    run(tmp_path, 2)
    payload = ckpt.load_checkpoint(tmp_path)                 # a run directory …
    same = ckpt.load_checkpoint(tmp_path / "checkpoint.pt")  # … or its file
    assert payload["step"] == same["step"] == 2 and sorted(payload) == sorted(same)
    assert payload["model_config"]["spec_text"] == MODEL.spec_text   # the spec travels with the weights
    assert payload["train_config"] == replace(TRAIN, steps=2).to_dict()
    assert len(payload["loss_history"]) == 2 and len(payload["evaluations"]) == 1
    model = ckpt.model_from_checkpoint(payload)
    for name, tensor in payload["model"].items():
        assert torch.equal(model.state_dict()[name], tensor)
    assert not model.training


def test_a_run_killed_while_writing_leaves_the_previous_checkpoint(tmp_path, monkeypatch):
    run(tmp_path, 2)
    before = (tmp_path / "checkpoint.pt").read_bytes()
    real_save = torch.save

    def dies_halfway(obj, handle, *args, **kwargs):
        real_save({"partial": torch.zeros(1000)}, handle)   # some bytes reach the temp file …
        handle.flush()
        raise KeyboardInterrupt                              # … then the process is interrupted

    monkeypatch.setattr(torch, "save", dies_halfway)
    with pytest.raises(KeyboardInterrupt):
        ckpt.save_checkpoint(tmp_path / "checkpoint.pt", {"step": 3})
    monkeypatch.undo()
    assert (tmp_path / "checkpoint.pt").read_bytes() == before
    assert not list(tmp_path.glob(".*.tmp"))                  # the temp file is gone
    assert ckpt.load_checkpoint(tmp_path)["step"] == 2


def test_unreadable_checkpoints_are_clear_errors(tmp_path):
    with pytest.raises(CellgenError, match="no such checkpoint"):
        ckpt.load_checkpoint(tmp_path / "missing.pt")
    with pytest.raises(CellgenError, match="has no checkpoint.pt"):
        ckpt.load_checkpoint(tmp_path)
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(b"\x00\x01 not a checkpoint at all")
    with pytest.raises(CellgenError, match="not a readable checkpoint"):
        ckpt.load_checkpoint(garbage)
    run(tmp_path / "real", 2)
    data = (tmp_path / "real" / "checkpoint.pt").read_bytes()
    truncated = tmp_path / "truncated.pt"
    truncated.write_bytes(data[: len(data) // 2])
    with pytest.raises(CellgenError, match="truncated, corrupt"):
        ckpt.load_checkpoint(truncated)
    foreign = tmp_path / "foreign.pt"
    torch.save({"weights": torch.zeros(2)}, foreign)
    with pytest.raises(CellgenError, match="not a cellgen training checkpoint"):
        ckpt.load_checkpoint(foreign)


def test_checkpoints_load_without_running_code(tmp_path):
    """weights_only loading: a pickle that would run code is refused, not executed."""
    class Evil:
        def __reduce__(self):
            return (exec, ("raise SystemExit('ran code from a checkpoint')",))

    evil = tmp_path / "evil.pt"
    torch.save({"format": ckpt.FORMAT, "payload": Evil()}, evil)
    with pytest.raises(CellgenError, match="not a readable checkpoint"):
        ckpt.load_checkpoint(evil)
