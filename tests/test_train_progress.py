"""The progress line: steps, loss, recent speed; one line per `every` steps when not on a terminal."""
import io

from cellgen.training.progress import Progress, format_duration


def test_progress_prints_lines_off_a_terminal():
    stream = io.StringIO()
    progress = Progress(10, sequences_per_step=8, every=5, stream=stream)
    for step in range(1, 11):
        progress.update(step, 0.5 / step)
    progress.message("step 10: test …")
    progress.close()
    lines = stream.getvalue().splitlines()
    assert [line.split()[1] for line in lines[:2]] == ["5/10", "10/10"]
    assert "loss 0.10000" in lines[0] and "step/s" in lines[0] and "seq/s" in lines[0] and "eta" in lines[0]
    assert " in " in lines[1]            # the last line says how long it took
    assert lines[2] == "step 10: test …"


def test_disabled_progress_prints_nothing():
    stream = io.StringIO()
    progress = Progress(3, stream=stream, enabled=False)
    progress.update(1, 1.0)
    progress.message("x")
    assert stream.getvalue() == ""


def test_durations():
    assert [format_duration(s) for s in (5, 65, 3725)] == ["5s", "1m05s", "1h02m"]
