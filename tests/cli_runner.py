"""`cellgen …` run in this process: `cellgen.cli.main` with stdout and stderr captured, giving
what a subprocess run gives (exit status, stdout, stderr) without a fresh Python and torch
import per run. For tests of what a command does; tests of the executable itself (its entry
point, exit codes as the shell sees them, isolation) run it in a real subprocess."""
import contextlib
import io
import subprocess


def run_in_process(*args) -> subprocess.CompletedProcess:
    from cellgen import cli

    argv = [str(arg) for arg in args]
    out = io.TextIOWrapper(io.BytesIO(), encoding="utf-8", write_through=True)  # `.buffer` for binary output
    err = io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            status = cli.main(argv)
        except SystemExit as stop:  # argparse: --help, --version, usage errors
            status = stop.code if isinstance(stop.code, int) else (0 if stop.code is None else 2)
    out.flush()
    return subprocess.CompletedProcess(["cellgen", *argv], status, out.buffer.getvalue().decode("utf-8"),
                                       err.getvalue())
