"""A training run stopped again and again by SIGINT, SIGTERM and SIGKILL at random moments
(with a checkpoint written after every step, so many land during a write) always leaves a
loadable checkpoint (the previous or the new one), resumes without --force, and ends with
weights bit-identical to a run never interrupted. Slow, bounded to about two minutes.

The uninterrupted reference checkpoints only at its end: a checkpoint every step costs more
than the step here (metrics.json and metrics.csv are rewritten whole each time), and the
reference's weights cannot depend on how often it saved them, so comparing against a run that
saved rarely also proves that saving leaves the training untouched."""
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parent.parent
TINY = ["-p", "hidden=4", "-p", "k=3", "--frame-size", "16", "--context", "2", "--future", "2", "--batch-size", "2",
        "--eval-sequences", "2", "--eval-batch-size", "2", "--test-sequences", "2", "--threads", "1", "--quiet",
        "--layers", "1", "--eval-every", "1000000"]
STEPS = 800
BUDGET = 60  # seconds of interrupting


def _env():
    return dict(os.environ, PYTHONPATH=str(ROOT))


def _train(out: Path, resume: bool, checkpoint_every: int = 1) -> subprocess.Popen:
    argv = [sys.executable, "-m", "cellgen", "train", "convlstm", *TINY, "--checkpoint-every", str(checkpoint_every),
            "--steps", str(STEPS), "--out", str(out)]
    return subprocess.Popen(argv + (["--resume"] if resume else []), env=_env(), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


@pytest.mark.slow
def test_signals_at_random_moments_never_lose_the_run(tmp_path):
    from cellgen.training.checkpoint import load_checkpoint

    rng = random.Random(14)
    out = tmp_path / "run"
    steps_seen, began, kills = [], time.time(), []
    while time.time() - began < BUDGET:
        resume = (out / "checkpoint.pt").exists()
        process = _train(out, resume)
        time.sleep(rng.uniform(4.0, 10.0))  # startup is ~4 s here: some land before training, most during
        signum = rng.choice([signal.SIGINT, signal.SIGTERM, signal.SIGKILL])
        process.send_signal(signum)
        _, stderr = process.communicate(timeout=120)
        kills.append((signum.name, process.returncode))
        assert "Traceback" not in stderr, stderr
        if process.returncode == 0:
            break  # finished before the signal
        assert process.returncode in (128 + signum, -signum, 1 if signum == signal.SIGINT else -1, 130), \
            (signum, process.returncode, stderr[-400:])
        if (out / "checkpoint.pt").exists():
            steps_seen.append(load_checkpoint(out)["step"])  # whole, always
        leftover = [p.name for p in out.iterdir() if p.name.endswith(".tmp")] if out.exists() else []
        assert len(leftover) <= 1, leftover  # at most the one write a kill -9 cut short
    assert steps_seen == sorted(steps_seen), steps_seen  # never a step back
    finish = _train(out, (out / "checkpoint.pt").exists())
    _, stderr = finish.communicate(timeout=600)
    assert finish.returncode == 0, stderr
    whole = _train(tmp_path / "whole", False, checkpoint_every=STEPS)
    _, stderr = whole.communicate(timeout=600)
    assert whole.returncode == 0, stderr
    interrupted = load_checkpoint(out)["model"]
    reference = load_checkpoint(tmp_path / "whole")["model"]
    assert interrupted.keys() == reference.keys()
    for name in reference:
        assert torch.equal(interrupted[name], reference[name]), name
    print(f"{len(kills)} interruptions: {kills}; checkpoints at steps {steps_seen}")
