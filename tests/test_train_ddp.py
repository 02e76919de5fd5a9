"""DistributedDataParallel on CPU: two real processes (torchrun, gloo) follow one process's run.

Both runs use the same global batch (4): under torchrun each process reads its half of it and
DDP averages the gradients, so the loss at every step must match the single process's up to
float rounding (the order of additions differs). Scheduled sampling is on, so the coins of
the two halves must line up with the single process's too.
"""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
ARGS = ["train", "predrnn", "-p", "hidden=4", "-p", "k=3", "--frame-size", "16", "--context", "4", "--future", "4",
        "--batch-size", "4", "--steps", "5", "--eval-every", "5", "--eval-sequences", "4", "--test-sequences", "4",
        "--scheduled-sampling", "4", "--lr", "0.003", "--quiet"]


def run(command, out):
    environment = dict(os.environ)
    environment["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), environment.get("PYTHONPATH")]))
    environment["OMP_NUM_THREADS"] = "1"
    result = subprocess.run([*command, *ARGS, "--out", str(out)], env=environment, capture_output=True, text=True,
                            timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
    return json.loads((out / "metrics.json").read_text(encoding="utf-8"))


@pytest.mark.slow
def test_two_process_ddp_matches_one_process_with_the_same_global_batch(tmp_path):
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "-m", "cellgen"]
    two = run(torchrun, tmp_path / "ddp")
    one = run([sys.executable, "-m", "cellgen"], tmp_path / "single")
    assert two["processes"] == 2 and one["processes"] == 1
    steps_two, losses_two = zip(*two["loss"])
    steps_one, losses_one = zip(*one["loss"])
    assert steps_two == steps_one == (1, 2, 3, 4, 5)
    assert len(set(losses_one)) == 5  # a real trajectory: every step's loss differs
    for a, b in zip(losses_two, losses_one):
        assert abs(a - b) <= 1e-5 * abs(b), (losses_two, losses_one)
    assert abs(two["evaluations"][-1]["model"]["mse"] - one["evaluations"][-1]["model"]["mse"]) <= \
        1e-3 * one["evaluations"][-1]["model"]["mse"]
