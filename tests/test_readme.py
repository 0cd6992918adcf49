"""The README's Python quick start runs as written."""

import re
from pathlib import Path

import pytest

README = (Path(__file__).resolve().parents[1] / "README.md").read_text()


@pytest.mark.slow
def test_readme_python_quick_start_runs(check_recorded_accuracy):
    block = re.search(r"```python\n(.*?)```", README, re.S).group(1)
    namespace: dict = {}
    exec(compile(block, "README.md", "exec"), namespace)
    # It trains the textbook network for 30 epochs with keys 0 and 1 (a run that does not stall;
    # a stalled one ends near 0.8, chance is 0.1).
    assert namespace["per_ex"][0]["w"].shape == (5, 784, 30)
    assert len(namespace["history"]) == 30
    check_recorded_accuracy(namespace["gd"].accuracy(namespace["params"], namespace["test"]), "README quick start")
