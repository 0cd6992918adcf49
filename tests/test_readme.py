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


def test_readme_own_model_example_trains_a_custom_pytree():
    import jax

    import gd_jax as gd

    section = README[README.index("### Your own model"):]
    block = re.search(r"```python\n(.*?)```", section, re.S).group(1)
    train, test = gd.load_mnist("sample")
    namespace: dict = {"jax": jax, "gd": gd, "train": train.take(1000), "test": test.take(1000)}
    exec(compile(block, "README.md", "exec"), namespace)
    history = namespace["history"]
    assert len(history) == 5 and history["eval_accuracy"][-1] > 0.8  # chance is 0.1
    logits = namespace["forward"](namespace["model"], test.x[:1000])
    assert history["eval_accuracy"][-1] == pytest.approx(float((logits.argmax(1) == test.y[:1000]).mean()), abs=1e-6)
