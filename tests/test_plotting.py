"""Run figures (gd_jax._src.plotting) and the numbers behind them (gd_jax._src.analysis).

The numbers are checked against a forward pass written here in numpy and against
``gd.evaluate``; the figures are checked as files (valid PNGs of the documented pixel size,
written atomically) and by what was drawn (the plotted values, titles and labels), read from
the matplotlib figure just before it is saved.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys

import jax
import numpy as np
import pytest
from PIL import Image

import gd_jax as gd
from gd_jax._src import plotting
from gd_jax._src.analysis import confusion_matrix, hidden_weight_images, misclassified

CONFIG = {"sizes": [784, 30, 10], "epochs": 2, "batch_size": 10, "learning_rate": 3.0, "momentum": 0.5,
          "nesterov": False, "cost": "quadratic", "activation": "sigmoid", "init": "normal", "seed": 7,
          "validation": True}


@pytest.fixture(scope="module")
def trained(mnist_sample):
    """A network trained for 2 epochs on 1,000 real digits, its history and 2,000 test digits."""
    train, test = mnist_sample
    params = gd.init_mlp(jax.random.key(0), [784, 30, 10])
    params, history = gd.fit(params, train.take(1000), eval_data=test.take(500), epochs=2, batch_size=10,
                             optimizer=gd.sgd(3.0), cost=gd.quadratic_cost, key=jax.random.key(1))
    return params, history, test.take(2000)


def numpy_answers(params, x) -> np.ndarray:
    """The textbook forward pass in numpy: a = sigma(a @ w + b) layer by layer, then argmax."""
    a = np.asarray(x, np.float64)
    for layer in params:
        a = 1.0 / (1.0 + np.exp(-(a @ np.asarray(layer["w"], np.float64) + np.asarray(layer["b"], np.float64))))
    return a.argmax(axis=1)


def test_confusion_matrix_equals_numpy_and_evaluate(trained):
    params, _, test = trained
    counts = confusion_matrix(params, test)
    answers, y = numpy_answers(params, test.x), np.asarray(test.y)
    want = np.zeros((10, 10), np.int64)
    for t, p in zip(y, answers):
        want[t, p] += 1
    np.testing.assert_array_equal(counts, want)
    assert counts.sum(axis=1).tolist() == np.bincount(y, minlength=10).tolist()
    _, accuracy = gd.evaluate(params, test, cost=gd.quadratic_cost)
    assert np.trace(counts) / counts.sum() == pytest.approx(accuracy, abs=1e-6)


def test_misclassified_equals_numpy_and_evaluate(trained):
    params, _, test = trained
    wrong = misclassified(params, test)
    np.testing.assert_array_equal(wrong, np.flatnonzero(numpy_answers(params, test.x) != np.asarray(test.y)))
    _, accuracy = gd.evaluate(params, test, cost=gd.quadratic_cost)
    assert len(wrong) == round((1 - accuracy) * test.size) and 0 < len(wrong) < test.size


def test_a_model_of_its_own_through_predict_fn(trained):
    params, _, test = trained
    # A model whose answer is the *least* active output: the functions must use its scores, not gd.predict.
    def contrarian(p, x):
        return -gd.predict(p, x)

    counts = confusion_matrix(params, test, predict_fn=contrarian)
    a = 1 / (1 + np.exp(-(1 / (1 + np.exp(-(np.asarray(test.x) @ params[0]["w"] + params[0]["b"]))) @ params[1]["w"]
                          + params[1]["b"])))
    answers = a.argmin(axis=1)
    np.testing.assert_array_equal(np.diag(counts), np.bincount(np.asarray(test.y)[answers == test.y], minlength=10))
    np.testing.assert_array_equal(misclassified(params, test, predict_fn=contrarian),
                                  np.flatnonzero(answers != np.asarray(test.y)))


def test_hidden_weight_images_are_the_columns_of_w(trained):
    params, _, _ = trained
    images = hidden_weight_images(params)
    assert images.shape == (30, 28, 28)
    w = np.asarray(params[0]["w"])
    for j in (0, 17, 29):
        np.testing.assert_array_equal(images[j], w[:, j].reshape(28, 28))
    np.testing.assert_array_equal(hidden_weight_images(params, (14, 56))[3], w[:, 3].reshape(14, 56))
    odd = gd.init_mlp(jax.random.key(0), [10, 4, 2])
    with pytest.raises(ValueError, match=r"10 inputs, not a square image; pass image_shape"):
        hidden_weight_images(odd)
    with pytest.raises(ValueError, match=r"image_shape \(3, 3\) has 9 pixels but the first layer has 10 inputs"):
        hidden_weight_images(odd, (3, 3))


def test_confusion_matrix_refuses_labels_outside_the_outputs(trained):
    params, _, test = trained
    with pytest.raises(ValueError, match=r"labels from 0 to 10, outside the network's 10 classes"):
        confusion_matrix(params, gd.Dataset(test.x[:3], np.array([0, 10, 1], np.int32)))


@pytest.fixture
def drawn(monkeypatch):
    """What each figure showed, by file name, read from the figure just before it is saved."""
    seen: dict[str, dict] = {}
    save = plotting.save_figure

    def record(fig, path):
        axes = fig.get_axes()
        seen[os.path.basename(path)] = {
            "suptitle": fig._suptitle.get_text() if fig._suptitle else "",
            "titles": [ax.get_title() for ax in axes],
            "xlabels": [ax.get_xlabel() for ax in axes],
            "ylabels": [ax.get_ylabel() for ax in axes],
            "lines": {(i, line.get_label()): np.asarray(line.get_ydata(), float)
                      for i, ax in enumerate(axes) for line in ax.get_lines()},
            "xticks": [ax.get_xticks() for ax in axes],
            "texts": [t.get_text() for ax in axes for t in ax.texts],
            "supxlabel": fig._supxlabel.get_text() if fig._supxlabel else "",
        }
        save(fig, path)

    monkeypatch.setattr(plotting, "save_figure", record)
    return seen


def png_size(path) -> tuple[int, int]:
    with open(path, "rb") as f:
        assert f.read(8) == b"\x89PNG\r\n\x1a\n"
    with Image.open(path) as image:
        image.verify()  # the whole file decodes: chunks and CRCs
    with Image.open(path) as image:
        return image.size


def test_run_figures_are_valid_pngs_of_the_documented_size(trained, tmp_path, drawn):
    params, history, test = trained
    written = plotting.write_run_figures(tmp_path, params, test, history, CONFIG)
    assert list(written) == list(plotting.RUN_FIGURES)
    assert sorted(os.listdir(tmp_path)) == sorted(plotting.RUN_FIGURES)  # no temporary files left
    n_wrong = len(misclassified(params, test))
    rows = math.ceil(min(32, n_wrong) / 8)
    want = {"history.png": (1100, 450), "confusion.png": (700, 620), "misclassified.png": (1120, rows * 200 + 100),
            "hidden_weights.png": (900, 900)}
    assert {name: png_size(path) for name, path in written.items()} == want
    # Every figure titled, its axes labelled.
    for name in plotting.RUN_FIGURES:
        shown = drawn[name]
        assert shown["suptitle"] or shown["titles"][0], name  # [0]: the main axes (not a colour bar)
        assert (shown["xlabels"][0] and shown["ylabels"][0]) or shown["supxlabel"], name
    counts = confusion_matrix(params, test)
    accuracy = np.trace(counts) / counts.sum()
    assert f"accuracy {accuracy:.4f} of 2,000 examples" in drawn["confusion.png"]["titles"][0]
    # Each count is written in its cell (zeros left blank).
    assert sorted(int(t) for t in drawn["confusion.png"]["texts"]) == sorted(counts[counts > 0].tolist())
    assert f"misclassified test digits: {n_wrong:,} of 2,000" in drawn["misclassified.png"]["suptitle"]


def test_gallery_draws_the_misclassified_digits_and_their_answers(trained, tmp_path, drawn):
    params, _, test = trained
    shown = plotting.plot_misclassified(params, test, tmp_path / "m.png", max_digits=12)
    wrong = misclassified(params, test)
    np.testing.assert_array_equal(shown, wrong[:12])
    answers = numpy_answers(params, test.x)
    labels = [t for t in drawn["m.png"]["texts"] if t.startswith("#")]
    assert labels == [f"#{i}: true {test.y[i]}, net {answers[i]}" for i in wrong[:12]]
    assert png_size(tmp_path / "m.png") == (1120, 2 * 200 + 100)
    chosen = plotting.plot_misclassified(params, test, tmp_path / "c.png", indices=[5, 3])
    assert chosen.tolist() == [5, 3]


def _cells_with_colour(path, fig, colour, *, rows: int, columns: int = 8, tolerance: int = 40) -> list[int]:
    """How many pixels near ``colour`` each cell of a saved gallery holds (its one axes split into the cells)."""
    with Image.open(path) as image:
        pixels = np.asarray(image.convert("RGB"), np.int64)
    box = fig.get_axes()[0].get_window_extent()  # display pixels: the saved PNG's at the same dpi, y up
    near = np.abs(pixels - np.asarray(colour)).max(axis=-1) <= tolerance
    top, width, height = pixels.shape[0] - box.y1, box.width / columns, box.height / rows
    return [int(near[round(top + r * height):round(top + (r + 1) * height),
                     round(box.x0 + c * width):round(box.x0 + (c + 1) * width)].sum())
            for r in range(rows) for c in range(columns)]


def test_gallery_bars_carry_class_labels_in_legible_text(trained, tmp_path, monkeypatch):
    params, _, test = trained
    figures = []
    save = plotting.save_figure
    monkeypatch.setattr(plotting, "save_figure", lambda fig, path: (figures.append(fig), save(fig, path)))
    shown = plotting.plot_misclassified(params, test, tmp_path / "m.png", max_digits=8)
    texts = [t for ax in figures[0].get_axes() for t in ax.texts]
    assert min(t.get_fontsize() for t in texts) >= 6.5  # matplotlib's 5 pt is illegible at 100 dpi
    labels = [t.get_text() for t in texts if t.get_text().isdigit() and len(t.get_text()) == 1]
    # Per cell: the ten class labels under the bars and the 0 and 1 of the scale.
    assert len(labels) == len(shown) * 12
    assert sorted(labels[:12]) == sorted([*map(str, range(10)), "0", "1"])


def test_the_answer_bar_shows_when_every_activation_is_near_zero(trained, tmp_path, monkeypatch):
    """A network whose activations are all about 1e-6 still shows which bar is its answer (and the truth)."""
    params, _, test = trained
    figures = []
    save = plotting.save_figure
    monkeypatch.setattr(plotting, "save_figure", lambda fig, path: (figures.append(fig), save(fig, path)))
    faint = lambda p, x: gd.predict(p, x) * 1e-6  # noqa: E731
    shown = plotting.plot_misclassified(params, test, tmp_path / "faint.png", max_digits=8, predict_fn=faint)
    assert len(shown) == 8
    red = _cells_with_colour(tmp_path / "faint.png", figures[0], (214, 39, 40), rows=1)  # matplotlib's C3
    green = _cells_with_colour(tmp_path / "faint.png", figures[0], (44, 160, 44), rows=1)  # C2
    assert min(red) >= 10 and min(green) >= 10, (red, green)


def test_learning_curves_title_states_each_setting_once(tmp_path, drawn):
    """What ``gd-jax train`` draws: the settings in one line of the title, none of them twice."""
    from gd_jax.cli import main

    out = tmp_path / "run"
    assert main(["train", "--sizes", "784,10,10", "--epochs", "1", "--no-progress", "--no-tensorboard",
                 "--momentum", "0.5", "--lmbda", "1", "--out", str(out)]) == 0
    title = drawn["history.png"]["suptitle"]
    settings = title.splitlines()[1]
    assert settings == ("[784, 10, 10], sigmoid, quadratic cost, eta 3, batch 10, momentum 0.5, L2 lambda 1, "
                        "init normal, seed 2")
    assert title.count("784") == title.count("eta") == title.count("seed") == title.count("momentum") == 1, title
    assert title.splitlines()[0].startswith("learning curves - final test accuracy ")


def test_learning_curves_show_the_history_and_the_settings(trained, tmp_path, drawn):
    _, history, _ = trained
    records = [dict(r, train_accuracy=0.5 + 0.1 * r["epoch"]) for r in history.epochs]  # as fit records it soon
    history = gd.History(records, history.stop_reason)
    plotting.plot_history(history, tmp_path / "h.png", config=CONFIG, test_accuracy=0.8123)
    shown = drawn["h.png"]
    np.testing.assert_allclose(shown["lines"][(0, "training data")], history["train_cost"])
    np.testing.assert_allclose(shown["lines"][(0, "validation data")], history["eval_cost"])
    np.testing.assert_allclose(shown["lines"][(1, "training data")], history["train_accuracy"])
    np.testing.assert_allclose(shown["lines"][(1, "validation data")], history["eval_accuracy"])  # a fraction
    assert shown["lines"][(1, "final test accuracy 0.8123")].tolist() == [0.8123, 0.8123]
    for part in ("final test accuracy 0.8123", "momentum 0.5", "seed 7", "init normal", "sigmoid", "eta 3"):
        assert part in shown["suptitle"], part
    assert shown["ylabels"][1] == "accuracy (fraction correct)"
    for ticks in shown["xticks"]:
        assert np.all(ticks == np.round(ticks)), ticks  # whole epochs only
    # Without a validation set the evaluation data is the test set.
    plotting.plot_history(history, tmp_path / "t.png", config=dict(CONFIG, validation=False))
    assert (0, "test data") in drawn["t.png"]["lines"]


def test_plot_history_keeps_its_old_call_and_reads_history_json(trained, tmp_path, drawn):
    _, history, _ = trained
    plotting.plot_history(history, tmp_path / "old.png", title="[784, 30, 10], quadratic cost")
    assert drawn["old.png"]["suptitle"] == "[784, 30, 10], quadratic cost"
    assert (0, "evaluation data") in drawn["old.png"]["lines"]
    plotting.plot_history(history.to_dict(), tmp_path / "dict.png")  # history.json's content
    np.testing.assert_allclose(drawn["dict.png"]["lines"][(0, "training data")], history["train_cost"])
    plotting.plot_history(gd.History(), tmp_path / "empty.png")  # e.g. --epochs 0
    assert png_size(tmp_path / "empty.png") == (1100, 450)


def test_describe_config_names_every_setting():
    assert plotting.describe_config(CONFIG) == (
        "[784, 30, 10], sigmoid, quadratic cost, eta 3, batch 10, momentum 0.5, init normal, seed 7")
    assert "no momentum" in plotting.describe_config({"momentum": None})
    assert plotting.describe_config({"momentum": 0.9, "nesterov": True}) == "momentum 0.9 (Nesterov)"


def test_figures_of_another_model_skip_the_hidden_weights(trained, tmp_path):
    params, history, test = trained
    written = plotting.write_run_figures(tmp_path, params, test, history, predict_fn=lambda p, x: gd.predict(p, x))
    assert "hidden_weights.png" not in written and not os.path.exists(tmp_path / "hidden_weights.png")
    with pytest.raises(FileNotFoundError, match=r"run folder not found: .*nowhere"):
        plotting.write_run_figures(tmp_path / "nowhere", params, test, history)


def test_import_gd_jax_loads_no_plotting_imaging_or_tensorboard_library():
    code = ("import sys, gd_jax; heavy = ('matplotlib', 'PIL', 'tensorboardX', 'tensorboard', 'tensorflow_datasets');"
            " print(sorted({m.split('.')[0] for m in sys.modules} & set(heavy)))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120)
    assert out.stdout.strip() == "[]"


def _find_mnist_full():
    here = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    while True:
        candidate = os.path.join(here, "shared", "data", "mnist-full")
        if os.path.isdir(candidate):
            return candidate
        if os.path.dirname(here) == here:
            return None
        here = os.path.dirname(here)


@pytest.mark.slow
@pytest.mark.skipif(_find_mnist_full() is None,
                    reason="full MNIST (shared/data/mnist-full beside the repository) is absent on this machine")
def test_run_figures_experiment_reports_what_the_analysis_computes(tmp_path):
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    done = subprocess.run([sys.executable, "experiments/run_figures.py", "--epochs", "1", "--out", str(tmp_path)],
                          cwd=root, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    results = json.loads((tmp_path / "results.json").read_text())
    counts = np.array(results["confusion_matrix"])
    assert counts.sum() == 10000 and np.trace(counts) / 10000 == pytest.approx(results["test_accuracy"], abs=1e-6)
    assert len(results["misclassified"]) == 10000 - np.trace(counts)
    assert results["history"]["epochs"][0]["eval_accuracy"] == pytest.approx(results["test_accuracy"], abs=1e-6)
    for name in plotting.RUN_FIGURES:
        assert png_size(tmp_path / name)[0] > 0
    assert any(n.startswith("events.out.tfevents.") for n in os.listdir(tmp_path))
