"""The experiment and benchmark scripts run end to end (tiny settings) and agree with the API."""

import json
import subprocess
import sys
from pathlib import Path

import jax
import pytest

import gd_jax as gd

ROOT = Path(__file__).resolve().parents[1]


def _run(*args):
    done = subprocess.run([sys.executable, *args], cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


@pytest.mark.slow
def test_textbook_chapter1_reports_what_fit_computes(tmp_path):
    out = tmp_path / "ch1"
    _run("experiments/textbook_chapter1.py", "--seeds", "1", "--epochs", "2", "--configs", "textbook",
         "--out", str(out))
    results = json.loads((out / "results.json").read_text())
    run = results["configs"]["textbook"]["runs"][0]
    # The same seed through the public API, keys derived as the CLI derives them.
    init_key, shuffle_key = jax.random.split(jax.random.key(0))
    train, test = gd.load_mnist("sample")
    _, history = gd.fit(gd.init_mlp(init_key, [784, 30, 10]), train, eval_data=test, epochs=2, batch_size=10,
                        optimizer=gd.sgd(3.0), cost=gd.quadratic_cost, key=shuffle_key)
    assert run["final_accuracy"] == pytest.approx(history["eval_accuracy"][-1], abs=1e-7)
    assert "| textbook |" in (out / "results.md").read_text()
    assert (out / "accuracy.png").read_bytes()[:4] == b"\x89PNG"
