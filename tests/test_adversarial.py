"""Every case of bench/adversarial.py (issue 14) as a test: each runs cellgen as a user does, in
subprocesses, and must be clean. Slow: about 5 s of torch import per case."""
import sys
import tempfile
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "bench"))
import adversarial  # noqa: E402


@pytest.mark.slow
@pytest.mark.parametrize("case", adversarial.CASES, ids=lambda c: c.name)
def test_adversarial_case_is_clean(case):
    with tempfile.TemporaryDirectory(prefix="adversarial-") as tmp:
        clean, note = case.run(Path(tmp))
    assert clean, note
