"""The conventions of a training tool: metrics.csv, TensorBoard, --config run.toml with flags
overriding it, the resolved config saved with the run, learning-rate schedules, clipping, the
best checkpoint, and the pictures (curves.png, predictions.gif)."""
import csv
import io
import sys
import tomllib

import numpy as np
import pytest

from cellgen.cli import main
from cellgen.training.checkpoint import load_checkpoint
from cellgen.training.png import decode_png

SMALL = ["--frame-size", "16", "--context", "3", "--future", "3", "--batch-size", "2", "--eval-sequences", "2",
         "--eval-batch-size", "2", "--test-sequences", "4", "--threads", "1", "--quiet"]


# The runs pass --threads 1, which sets torch's threads for the whole process: one_thread
# (conftest.py) puts the setting back after the module.
pytestmark = pytest.mark.usefixtures("one_thread")


def _rows(run):
    return list(csv.DictReader(io.StringIO((run / "metrics.csv").read_text(encoding="utf-8"))))


@pytest.fixture(scope="module")
def configured_run(tmp_path_factory):
    """One run from a config file, with two of its options overridden on the command line."""
    root = tmp_path_factory.mktemp("configured")
    config = root / "run.toml"
    config.write_text(f'''
spec = "convlstm"
steps = 4
out = "{root / 'from-file'}"
eval-every = 2
lr = 0.01
lr_schedule = "cosine"
clip_grad = 0.05
ssim = "skimage"
batch_size = 4

[params]
hidden = 4
k = 3
''', encoding="utf-8")
    out = root / "run"
    assert main(["train", "--config", str(config), "--out", str(out), "--batch-size", "2", *SMALL]) == 0
    return config, out


def test_the_command_line_overrides_the_config_file_and_the_resolved_config_is_saved(configured_run):
    config, out = configured_run
    assert not (config.parent / "from-file").exists()                 # --out on the command line won
    saved = tomllib.loads((out / "config.toml").read_text(encoding="utf-8"))
    assert saved["spec"] == "convlstm" and saved["steps"] == 4 and saved["out"] == str(out)
    assert saved["batch_size"] == 2                                    # the flag, not the file's 4
    assert saved["lr"] == 0.01 and saved["lr_schedule"] == "cosine" and saved["ssim"] == "skimage"
    assert saved["params"] == {"hidden": 4, "k": 3}
    assert saved["eval_sequences"] == 2 and saved["layers"] == 2       # defaults and flags, resolved
    assert "resume" not in saved and "force" not in saved and "config" not in saved
    train = load_checkpoint(out)["train_config"]
    assert train["batch_size"] == 2 and train["lr"] == 0.01 and train["clip_grad"] == 0.05


def test_metrics_csv_has_a_row_per_step_and_per_evaluation_and_names_the_ssim_convention(configured_run):
    _, out = configured_run
    rows = _rows(out)
    assert [(r["kind"], int(r["step"])) for r in rows] == [("train", 1), ("train", 2), ("eval", 2), ("train", 3),
                                                          ("train", 4), ("eval", 4)]
    train = [r for r in rows if r["kind"] == "train"]
    # the cosine schedule from 0.01 over 4 steps, one rate per step
    assert [float(r["lr"]) for r in train] == pytest.approx([0.01 * (1 + np.cos(np.pi * s / 4)) / 2 for s in range(4)])
    assert all(float(r["grad_norm"]) > 0 and float(r["loss"]) > 0 for r in train)
    evals = [r for r in rows if r["kind"] == "eval"]
    assert {r["ssim_convention"] for r in evals} == {"skimage"} and all(r["lr"] == "" for r in evals)
    metrics = __import__("json").loads((out / "metrics.json").read_text(encoding="utf-8"))
    assert metrics["ssim_convention"] == "skimage" and "uniform 7x7" in metrics["metric_conventions"]
    assert [float(r["mse"]) for r in evals] == pytest.approx([e["model"]["mse"] for e in metrics["evaluations"]])


def test_clipping_holds_the_applied_gradient_to_the_norm(configured_run):
    """The recorded norm is the one before clipping; with clip_grad 0.05 the Adam step still
    moves, and the run stays finite."""
    _, out = configured_run
    norms = [float(r["grad_norm"]) for r in _rows(out) if r["kind"] == "train"]
    assert all(np.isfinite(norms))


def test_the_best_checkpoint_is_the_evaluation_with_the_lowest_mse(configured_run):
    _, out = configured_run
    best, latest = load_checkpoint(out / "best.pt"), load_checkpoint(out)
    mses = [e["model"]["mse"] for e in latest["evaluations"]]
    assert best["step"] == latest["evaluations"][int(np.argmin(mses))]["step"]
    assert best["evaluations"][-1]["model"]["mse"] == min(mses)


def test_the_pictures_are_written_and_decode(configured_run):
    _, out = configured_run
    curves = decode_png((out / "curves.png").read_bytes())
    assert curves.ndim == 3 and curves.shape[1] > 2 * curves.shape[0] and len(np.unique(curves.reshape(-1, 3), axis=0)) > 5
    gif = (out / "predictions.gif").read_bytes()
    assert gif[:6] == b"GIF89a" and gif.count(b"\x21\xf9\x04") == 6 and gif[-1:] == b"\x3b"   # 6 frames
    Image = pytest.importorskip("PIL.Image")
    image = Image.open(out / "predictions.gif")
    assert image.n_frames == 6 and image.info["loop"] == 0
    image.seek(4)                                                      # a predicted frame decodes
    assert np.asarray(image.convert("RGB")).std() > 0


def test_resuming_keeps_the_schedule_and_its_steps(configured_run, capsys):
    config, out = configured_run
    assert main(["train", "--config", str(config), "--out", str(out), "--batch-size", "2", "--steps", "6", "--resume",
                 *SMALL]) == 1
    assert "over which its cosine schedule is laid" in capsys.readouterr().err
    assert main(["train", "--config", str(config), "--out", str(out), "--batch-size", "2", "--resume",
                 "--lr-schedule", "onecycle", *SMALL]) == 1
    assert "--lr-schedule onecycle differs from the run's cosine" in capsys.readouterr().err


@pytest.mark.parametrize("text, message", [
    ("stepz = 4\n", "`stepz` is not an option of `cellgen train`"),
    ("steps = \"four\"\n", "`steps` must be a whole number"),
    ("lr_schedule = \"linear\"\n", "must be one of constant, cosine, onecycle"),
    ("quiet = 1\n", "`quiet` must be true or false"),
    ("[params]\nhidden = 2.5\n", "param `hidden` must be a whole number"),
    ("steps = [\n", "is not valid TOML"),
])
def test_config_file_mistakes_are_clear_errors(tmp_path, capsys, text, message):
    config = tmp_path / "run.toml"
    config.write_text(text, encoding="utf-8")
    assert main(["train", "convlstm", "--config", str(config), "--steps", "1", "--out", str(tmp_path / "r")]) == 1
    error = capsys.readouterr().err
    assert message in error and "Traceback" not in error


def test_required_options_may_come_from_either_place(tmp_path, capsys):
    assert main(["train", "convlstm", "--out", str(tmp_path / "r")]) == 1
    assert "needs --steps: on the command line, or as `steps` in --config" in capsys.readouterr().err
    assert main(["train", "--steps", "1", "--out", str(tmp_path / "r")]) == 1
    assert "needs SPEC" in capsys.readouterr().err
    assert main(["train", "convlstm", "--config", str(tmp_path / "absent.toml"), "--steps", "1", "--out",
                 str(tmp_path / "r")]) == 1
    assert "no such config file" in capsys.readouterr().err


def test_without_tensorboard_log_tensorboard_is_a_clear_error(tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)   # as if it were not installed
    args = ["train", "convlstm", "-p", "hidden=4", "-p", "k=3", "--steps", "1", "--log", "tensorboard", "--out",
            str(tmp_path / "r"), *SMALL]
    assert main(args) == 1
    error = capsys.readouterr().err
    assert "--log tensorboard needs the tensorboard package" in error and "pip install tensorboard" in error


def test_tensorboard_events_hold_the_runs_scalars(tmp_path):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    out = tmp_path / "run"
    assert main(["train", "convlstm", "-p", "hidden=4", "-p", "k=3", "--steps", "2", "--eval-every", "2",
                 "--log", "tensorboard", "--out", str(out), *SMALL]) == 0
    events = EventAccumulator(str(out / "tensorboard"))
    events.Reload()
    scalars = set(events.Tags()["scalars"])
    assert {"train/loss", "train/lr", "train/grad_norm", "eval/mse", "eval/ssim", "eval/copy_last_frame_mse"} <= scalars
    losses = [e.value for e in events.Scalars("train/loss")]
    rows = [float(r["loss"]) for r in _rows(out) if r["kind"] == "train"]
    assert losses == pytest.approx(rows, rel=1e-6)


def test_the_saved_config_repeats_the_run(configured_run, tmp_path):
    """`cellgen train --config DIR/config.toml --out OTHER`: the same run, loss for loss."""
    import json

    _, out = configured_run
    again = tmp_path / "again"
    assert main(["train", "--config", str(out / "config.toml"), "--out", str(again)]) == 0
    first, second = (json.loads((d / "metrics.json").read_text(encoding="utf-8")) for d in (out, again))
    assert second["loss"] == first["loss"] and second["train"] == first["train"]
    assert second["model"] == first["model"] and second["data"] == first["data"]


def test_eval_recomputes_in_the_runs_convention_or_the_one_asked_for(configured_run, capsys):
    import json

    _, out = configured_run
    capsys.readouterr()
    assert main(["eval", str(out), "--json"]) == 0
    own = json.loads(capsys.readouterr().out)
    assert own["model"]["ssim_convention"] == "skimage"
    last = load_checkpoint(out)["evaluations"][-1]["model"]
    assert own["model"]["ssim"] == pytest.approx(last["ssim"], abs=1e-6)
    assert main(["eval", str(out), "--json", "--ssim", "gaussian"]) == 0
    other = json.loads(capsys.readouterr().out)
    assert other["model"]["ssim_convention"] == "gaussian" and other["model"]["mse"] == own["model"]["mse"]
    assert other["model"]["ssim"] != pytest.approx(own["model"]["ssim"], abs=1e-4)
    assert main(["eval", str(out)]) == 0
    assert "SSIM convention skimage" in capsys.readouterr().out


def test_a_run_stopped_before_its_first_checkpoint_starts_afresh_but_a_users_config_stays(tmp_path, capsys):
    """A signal or kill -9 before the first checkpoint leaves config.toml (and maybe metrics.csv):
    nothing can resume that run, so a new one replaces its files without --force. A config.toml
    the user put in --out is not the run's own (no header line): it is never replaced unasked."""
    out = tmp_path / "run"
    tiny = ["-p", "hidden=4", "-p", "k=3", *SMALL]
    assert main(["train", "convlstm", "--steps", "1", "--out", str(out), *tiny]) == 0
    for name in ("checkpoint.pt", "best.pt", "metrics.json", "predictions.png", "predictions.gif", "curves.png"):
        (out / name).unlink()                                  # as a run killed before its first checkpoint
    assert (out / "config.toml").read_text(encoding="utf-8").startswith("# cellgen train:")
    capsys.readouterr()
    assert main(["train", "convlstm", "--steps", "2", "--out", str(out), *tiny]) == 0
    assert "stopped before its first checkpoint; starting it afresh" in capsys.readouterr().err
    assert load_checkpoint(out)["step"] == 2 and [row["step"] for row in _rows(out) if row["kind"] == "train"] == ["1", "2"]

    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "config.toml").write_text('spec = "convlstm"\nsteps = 2\n', encoding="utf-8")
    assert main(["train", "convlstm", "--steps", "1", "--out", str(mine), *tiny]) == 1
    assert "is not empty: it holds a run (config.toml)" in capsys.readouterr().err
    assert (mine / "config.toml").read_text(encoding="utf-8") == 'spec = "convlstm"\nsteps = 2\n'
