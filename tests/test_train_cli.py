"""`cellgen train`, `cellgen eval` and `cellgen export` as a user runs them.

What a command does runs in this process (`cellgen.cli.main`, tests/cli_runner.py): the same
code path as the executable without a torch import per command. A run killed with SIGKILL is
a real subprocess: what it tests is the process dying. The end-to-end flows (train → eval →
resume → export, the killed run) are marked slow.
"""
import json
import os
import signal
import subprocess
import sys
import time
import warnings
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from tests.cli_runner import run_in_process  # noqa: E402

SIZES = ["-p", "k=3", "--frame-size", "16", "--context", "4", "--future", "4", "--batch-size", "2",
         "--eval-sequences", "4", "--eval-batch-size", "4", "--test-sequences", "8", "--threads", "1", "--quiet"]
TINY = ["-p", "hidden=4", *SIZES]


@pytest.fixture(autouse=True, scope="module")
def restore_threads():
    """The in-process runs below pass --threads 1, which sets torch's thread count for the whole
    process; put it back for the test modules that follow."""
    import torch

    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


def env() -> dict:
    environment = dict(os.environ)
    environment["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), environment.get("PYTHONPATH")]))
    return environment


def cellgen(*args, timeout=300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "cellgen", *map(str, args)], env=env(), capture_output=True,
                          text=True, encoding="utf-8", timeout=timeout)


def assert_user_error(result, *fragments):
    assert result.returncode == 1, (result.stdout, result.stderr)
    assert "Traceback" not in result.stderr and "error:" in result.stderr
    for fragment in fragments:
        assert fragment in result.stderr, result.stderr


# --- mistakes (fast: in this process, tests/cli_runner.py) --------------------------------------

def test_unknown_data_is_a_clear_error(tmp_path):
    result = run_in_process("train", "convlstm", "--data", "moving-mnst", "--steps", "1", "--out", tmp_path / "run")
    assert_user_error(result, "unknown --data `moving-mnst`", "did you mean `moving-mnist`?")
    assert not (tmp_path / "run").exists()


def test_a_non_empty_out_dir_is_not_overwritten(tmp_path):
    (tmp_path / "notes.txt").write_text("mine", encoding="utf-8")
    result = run_in_process("train", "convlstm", *TINY, "--steps", "1", "--out", tmp_path)
    assert_user_error(result, "is not empty", "--resume", "--force")
    assert [p.name for p in tmp_path.iterdir()] == ["notes.txt"]
    assert (tmp_path / "notes.txt").read_text(encoding="utf-8") == "mine"


def test_a_model_that_cannot_be_built_leaves_no_run_behind(tmp_path):
    """The retry with the param spelt right must not find a run (its config.toml) in --out."""
    result = run_in_process("train", "convlstm", "-p", "hiden=4", *SIZES, "--steps", "1", "--out", tmp_path / "run")
    assert_user_error(result, "ConvLSTM has no param `hiden`", "did you mean `hidden`?")
    assert not (tmp_path / "run").exists()


def test_eval_of_a_corrupt_checkpoint_is_a_clear_error(tmp_path):
    corrupt = tmp_path / "corrupt.pt"
    corrupt.write_bytes(b"PK\x03\x04 definitely not a checkpoint")
    assert_user_error(run_in_process("eval", corrupt), "is not a readable checkpoint")


def test_missing_moving_mnist_file(tmp_path):
    result = run_in_process("train", "convlstm", "--data", f"moving-mnist:{tmp_path / 'absent.npy'}", "--steps",
                            "1", "--out", tmp_path / "run")
    assert_user_error(result, "no such Moving MNIST file")


# --- whole runs (slow) -----------------------------------------------------------------------

@pytest.mark.slow
def test_train_eval_resume_export(tmp_path):
    run = tmp_path / "run"
    first = run_in_process("train", "predrnn", *TINY, "--steps", "4", "--eval-every", "2", "--scheduled-sampling", "3",
                    "--out", run)
    assert first.returncode == 0, first.stderr
    # .cellgen-run.lock stays: removing a lock file on release would let two later runs lock two inodes
    assert {p.name for p in run.iterdir()} == {"checkpoint.pt", "best.pt", "metrics.json", "metrics.csv", "config.toml",
                                               "curves.png", "predictions.png", "predictions.gif",
                                               ".cellgen-run.lock"}
    assert "copy last frame" in first.stdout
    metrics = json.loads((run / "metrics.json").read_text(encoding="utf-8"))
    assert [s for s, _ in metrics["loss"]] == [1, 2, 3, 4]
    assert [e["step"] for e in metrics["evaluations"]] == [2, 4]
    last = metrics["evaluations"][-1]
    assert set(last) == {"step", "model", "copy_last_frame", "blank_frame"}
    assert len(last["model"]["per_frame"]["ssim"]) == 4
    assert (run / "predictions.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    # eval re-computes exactly the metrics of the run's last evaluation (table on stdout, JSON to -o)
    evaluated = run_in_process("eval", run / "checkpoint.pt", "-o", tmp_path / "eval.json")
    assert evaluated.returncode == 0, evaluated.stderr
    assert "SSIM" in evaluated.stdout and "copy last frame" in evaluated.stdout
    again = json.loads((tmp_path / "eval.json").read_text(encoding="utf-8"))
    assert again["step"] == 4
    for name in ("model", "copy_last_frame", "blank_frame"):
        assert again[name] == last[name]

    # resume to 6 steps == one uninterrupted 6-step run
    resumed = run_in_process("train", "predrnn", "--steps", "6", "--out", run, "--resume", "--quiet")
    assert resumed.returncode == 0, resumed.stderr
    whole = run_in_process("train", "predrnn", *TINY, "--steps", "6", "--eval-every", "2", "--scheduled-sampling", "3",
                    "--out", tmp_path / "whole")
    assert whole.returncode == 0, whole.stderr
    a = json.loads((run / "metrics.json").read_text(encoding="utf-8"))
    b = json.loads((tmp_path / "whole" / "metrics.json").read_text(encoding="utf-8"))
    assert a["loss"] == b["loss"] and len(a["loss"]) == 6
    assert a["evaluations"] == b["evaluations"]

    # a resumed run keeps its settings
    assert_user_error(run_in_process("train", "predrnn", "--steps", "8", "--out", run, "--resume", "--lr", "0.1"),
                      "--lr 0.1 differs from the run's 0.001")

    # --force starts over in the same directory
    forced = run_in_process("train", "convlstm", *TINY, "--steps", "2", "--out", run, "--force")
    assert forced.returncode == 0, forced.stderr
    assert json.loads((run / "metrics.json").read_text(encoding="utf-8"))["spec"] == "convlstm"

    # export: ONNX checked with onnxruntime against PyTorch, and TorchScript
    onnx_file = tmp_path / "step.onnx"
    exported = run_in_process("export", run, "--format", "onnx", "-o", onnx_file)
    assert exported.returncode == 0, exported.stderr
    assert "checked against PyTorch" in exported.stdout and onnx_file.stat().st_size > 0
    assert_user_error(run_in_process("export", run, "--format", "onnx", "-o", onnx_file), "already exists")
    scripted = run_in_process("export", run, "--format", "torchscript", "-o", tmp_path / "step.pt")
    assert scripted.returncode == 0, scripted.stderr
    assert not list(tmp_path.glob(".*.tmp"))


@pytest.mark.slow
def test_a_killed_run_leaves_a_loadable_checkpoint_and_resumes(tmp_path):
    """SIGKILL a run that writes a checkpoint every step, at several moments; every time the
    checkpoint on disk loads, and --resume finishes the run."""
    from cellgen.training.checkpoint import load_checkpoint

    run = tmp_path / "run"
    args = ["train", "convlstm", *SIZES, "-p", "hidden=16", "--steps", "400", "--eval-every", "400",
            "--checkpoint-every", "1", "--out", run]
    steps_seen = []
    for attempt, delay in enumerate((0.05, 0.7)):
        command = [sys.executable, "-m", "cellgen", *map(str, args)] + (["--resume"] if attempt else [])
        process = subprocess.Popen(command, env=env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        try:
            deadline = time.monotonic() + 120
            start_step = steps_seen[-1] if steps_seen else 0
            while time.monotonic() < deadline:
                if (run / "checkpoint.pt").exists() and _step_of(run) > start_step:
                    break
                assert process.poll() is None, process.stderr.read()
                time.sleep(0.02)
            time.sleep(delay)
        finally:
            process.send_signal(signal.SIGKILL)
            process.wait(timeout=30)
        payload = load_checkpoint(run)       # never torn
        assert payload["step"] > start_step
        assert len(payload["loss_history"]) == payload["step"]
        steps_seen.append(payload["step"])
    finish = run_in_process("train", "convlstm", "--steps", str(steps_seen[-1] + 3), "--out", run, "--resume", "--quiet")
    assert finish.returncode == 0, finish.stderr
    metrics = json.loads((run / "metrics.json").read_text(encoding="utf-8"))
    assert [s for s, _ in metrics["loss"]] == list(range(1, steps_seen[-1] + 4))
    assert not list(run.glob(".*.tmp"))     # the temp files of killed writes were cleaned up


def _step_of(run: Path) -> int:
    from cellgen.training.checkpoint import load_checkpoint

    try:
        return load_checkpoint(run)["step"]
    except Exception:  # noqa: BLE001 — only while polling; the test asserts on a clean load afterwards
        return 0


# --- the same command in-process (fast): what a resumed run may and may not change -----------

def test_a_resumed_run_keeps_its_model_data_and_training_settings(tmp_path, capsys):
    from cellgen.cli import main

    run = tmp_path / "run"
    assert main(["eval", str(tmp_path / "nowhere.pt")]) == 1
    assert "no such checkpoint" in capsys.readouterr().err
    assert main(["train", "convlstm", "--steps", "2", "--out", str(tmp_path), "--resume"]) == 1
    assert "nothing to resume" in capsys.readouterr().err
    assert main(["train", "convlstm", *TINY, "--steps", "1", "--out", str(run)]) == 0
    capsys.readouterr()
    for extra, message in [
        (["--lr", "0.5"], "--lr 0.5 differs from the run's 0.001"),
        (["--layers", "3"], "--layers 3 differs from the run's 2"),
        (["-p", "hidden=8"], "--param hidden=8 differs from the run's hidden=4"),
        (["--frame-size", "32"], "--frame-size 32 differs from the run's 16"),
        (["--force"], "pick one"),
    ]:
        assert main(["train", "convlstm", "--steps", "2", "--out", str(run), "--resume", *extra]) == 1
        assert message in capsys.readouterr().err
    assert main(["train", "predrnn", "--steps", "2", "--out", str(run), "--resume"]) == 1
    assert "is a run of `convlstm`, not `predrnn`" in capsys.readouterr().err
    assert main(["train", "convlstm", "--steps", "1", "--out", str(run), "--resume"]) == 0
    assert "already trained 1 steps" in capsys.readouterr().out
    # what may change: the target, and how often to evaluate
    assert main(["train", "convlstm", "--steps", "2", "--out", str(run), "--resume", "--eval-every", "1",
                 "--quiet"]) == 0
    metrics = json.loads((run / "metrics.json").read_text(encoding="utf-8"))
    assert [s for s, _ in metrics["loss"]] == [1, 2] and metrics["train"]["eval_every"] == 1


def test_training_on_a_moving_mnist_file(tmp_path, capsys):
    """--data moving-mnist:PATH: the frame size comes from the file, its last sequences are the test split."""
    import numpy as np

    from cellgen.cli import main

    path = tmp_path / "mnist_test_seq.npy"
    np.save(path, np.random.default_rng(0).integers(0, 256, size=(8, 6, 16, 16)).astype(np.uint8))
    run = tmp_path / "run"
    args = ["train", "convlstm", "-p", "hidden=4", "-p", "k=3", "--data", f"moving-mnist:{path}", "--context", "4",
            "--future", "4", "--test-sequences", "2", "--batch-size", "2", "--steps", "2", "--out", str(run), "--quiet"]
    assert main(args) == 0, capsys.readouterr().err
    metrics = json.loads((run / "metrics.json").read_text(encoding="utf-8"))
    assert metrics["data"]["name"] == "moving-mnist" and metrics["data"]["path"] == str(path.resolve())
    assert metrics["model"]["frame_size"] == [16, 16]
    assert metrics["evaluations"][-1]["model"]["sequences"] == 2
    assert main(args[:-5] + ["--frame-size", "32", "--steps", "2", "--out", str(tmp_path / "other")]) == 1
    assert "--frame-size is for moving-digits" in capsys.readouterr().err


def test_export_of_a_cell_whose_state_grows_is_its_rollout(tmp_path, capsys):
    """E3D-LSTM's memory history grows every step: `cellgen export` exports the whole rollout
    (context frames in, future frames out) and says why; asking for the step is a clear error."""
    import torch

    from cellgen.cli import main

    run = tmp_path / "run"
    assert main(["train", "e3d_lstm", *TINY, "--layers", "1", "--steps", "1", "--out", str(run)]) == 0
    capsys.readouterr()
    assert main(["export", str(run), "--format", "torchscript", "-o", str(tmp_path / "e3d.pt"), "--future", "5"]) == 0
    out = capsys.readouterr().out
    assert "the whole rollout: 4 observed frames in, 5 predicted frames out" in out
    assert "state history `layers.0.c.history` grows from step to step" in out
    assert "inputs:  context_frames (batch × 4 × 1 × 16 × 16)" in out and "checked against PyTorch" in out
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch 2.13 calls TorchScript deprecated
        frames = torch.jit.load(str(tmp_path / "e3d.pt"))(torch.rand(3, 4, 1, 16, 16))
    assert frames.shape == (3, 5, 1, 16, 16)

    assert main(["export", str(run), "--format", "torchscript", "-o", str(tmp_path / "step.pt"), "--step"]) == 1
    err = capsys.readouterr().err
    assert "step cannot be exported on its own" in err and "--rollout" in err and "Traceback" not in err
    assert not (tmp_path / "step.pt").exists()

    convlstm = tmp_path / "convlstm"
    assert main(["train", "convlstm", *TINY, "--layers", "1", "--steps", "1", "--out", str(convlstm)]) == 0
    capsys.readouterr()
    assert main(["export", str(convlstm), "--format", "torchscript", "-o", str(tmp_path / "c.pt"),
                 "--context", "3"]) == 1
    assert "add --rollout" in capsys.readouterr().err
    assert main(["export", str(convlstm), "--format", "torchscript", "-o", str(tmp_path / "c.pt"), "--rollout",
                 "--context", "3", "--future", "2"]) == 0
    assert "the whole rollout: 3 observed frames in, 2 predicted frames out" in capsys.readouterr().out
    assert not list(tmp_path.glob(".*.tmp"))


@pytest.mark.slow
def test_onnx_export_of_astm_runs_under_onnxruntime(tmp_path):
    """The command a user runs: ASTM (its history grows to 5 entries) trained, exported to ONNX
    as its rollout, checked against PyTorch with onnxruntime."""
    run = tmp_path / "run"
    trained = run_in_process("train", "astm", *TINY, "--layers", "1", "--steps", "1", "--out", run)
    assert trained.returncode == 0, trained.stderr
    exported = run_in_process("export", run, "--format", "onnx", "-o", tmp_path / "astm.onnx")
    assert exported.returncode == 0, exported.stderr
    assert "the whole rollout: 4 observed frames in, 4 predicted frames out" in exported.stdout
    assert "checked against PyTorch over 4 → 4 frames" in exported.stdout
    import onnxruntime

    session = onnxruntime.InferenceSession(str(tmp_path / "astm.onnx"), providers=["CPUExecutionProvider"])
    import numpy as np

    (frames,) = session.run(None, {"context_frames": np.random.rand(1, 4, 1, 16, 16).astype(np.float32)})
    assert frames.shape == (1, 4, 1, 16, 16)
