"""The run folder and sweep folder reference, made at build time from real folders.

The build runs a small ``gd-jax train`` and ``gd-jax sweep`` (2 epochs of a [784, 10, 10] network on
the embedded sample) into a temporary folder, then lists what they wrote: every file, the keys of
each JSON file with an example record, the arrays of ``params.npz``. The one thing written by hand
here is ``DESCRIPTIONS``, one sentence per file; the build fails when a folder holds a file that has
no description, or a description names a file that no folder holds, so the page cannot go stale.
"""

from __future__ import annotations

import fnmatch
import json
import os
import subprocess
import sys
import tempfile

RUN_DESCRIPTIONS = {
    "config.json": "every setting of the run, the data it trains on (sizes of the splits and the SHA-256 of each), "
                   "and `segments`: one record per process that trained it (epochs, start time, command line, "
                   "versions, device, git commit)",
    "history.json": "the config and one record per epoch (costs, accuracies, seconds), why it stopped, compile "
                    "seconds and the final test cost and accuracy; rewritten after every epoch",
    "params.npz": "the parameters, read back by `gd.load_params` or plain `numpy.load`",
    "history.png": "cost and accuracy curves of the epochs done, drawn whenever the run stops (`--no-figures` "
                   "leaves out this and the three figures below)",
    "confusion.png": "the test set's confusion matrix (when the run finishes)",
    "misclassified.png": "the test digits the network gets wrong, with its ten outputs (when the run finishes)",
    "hidden_weights.png": "each hidden neuron's input weights as a 28x28 image (when the run finishes)",
    "events.out.tfevents.*": "the TensorBoard event file: curves, hyperparameters (HParams) and figures "
                             "(`--no-tensorboard` leaves it out)",
    "checkpoints/epoch-*.npz": "the whole training state after each epoch, the newest two kept "
                               "(`epoch-000000.npz` is the start); `--resume` reads the newest",
}
SWEEP_DESCRIPTIONS = {
    "config.json": "the settings, the grid, the data's fingerprint and one segment per process, as in a run folder",
    "sweep.json": "the config, one record per model and epoch, each model's coordinates and how it stopped, epoch "
                  "and compile times",
    "sweep.csv": "the records as a table",
    "params.npz": "the stacked parameters: a leading axis of one entry per model",
    "accuracy.png": "final evaluation accuracy against each swept value: every seed a dot, mean and spread "
                    "(`--no-figures` leaves out this and `costs.png`)",
    "costs.png": "every model's training cost per epoch",
    "tensorboard/model-*/events.out.tfevents.*": "one TensorBoard run per model: its scalars and hyperparameters",
    "checkpoints/epoch-*.npz": "the whole sweep's state after each epoch (the newest two), for `--resume`",
}

TRAIN_ARGS = ["train", "--epochs", "2", "--sizes", "784,10,10", "--no-progress"]
SWEEP_ARGS = ["sweep", "--eta", "1,3", "--seeds", "2", "--epochs", "2", "--sizes", "784,10,10", "--no-progress"]


def run_cli(args: list[str], out: str) -> None:
    env = {**os.environ, "GD_JAX_COMPILE_CACHE": "off"}
    code = "import sys, gd_jax.cli as cli; sys.exit(cli.main(sys.argv[1:]))"
    done = subprocess.run([sys.executable, "-c", code, *args, "--out", out], env=env, capture_output=True,
                          text=True, timeout=600)
    if done.returncode != 0:
        raise RuntimeError(f"gd-jax {' '.join(args)} failed ({done.returncode}): {done.stderr[-2000:]}")


def _files(folder: str) -> list[str]:
    found = []
    for root, _, names in os.walk(folder):
        for name in names:
            found.append(os.path.relpath(os.path.join(root, name), folder).replace(os.sep, "/"))
    return sorted(found)


def _match(files: list[str], descriptions: dict[str, str], what: str) -> list[tuple[str, list[str], str]]:
    rows, unexplained = [], set(files)
    for pattern, text in descriptions.items():
        hits = [f for f in files if fnmatch.fnmatch(f, pattern)]
        if not hits:
            raise RuntimeError(f"docs/gen/gen_folders.py describes {pattern!r} but no {what} holds it: {files}")
        unexplained -= set(hits)
        rows.append((pattern, hits, text))
    if unexplained:
        raise RuntimeError(f"a {what} holds {sorted(unexplained)} that docs/gen/gen_folders.py does not describe; "
                           "add a line to its DESCRIPTIONS")
    return rows


def _shape(value, depth=0):
    """A short JSON example: lists cut to their first item, long strings cut."""
    if isinstance(value, dict):
        return {k: _shape(v, depth + 1) for k, v in value.items()}
    if isinstance(value, list):
        return [_shape(value[0], depth + 1), "..."] if len(value) > 1 else [_shape(v, depth + 1) for v in value]
    if isinstance(value, str) and len(value) > 70:
        return value[:60] + "..."
    if isinstance(value, float):
        return round(value, 4)
    return value


def _json_block(path: str, title: str) -> list[str]:
    with open(path) as f:
        data = json.load(f)
    text = json.dumps(_shape(data), indent=2)
    return [f"??? example \"{title}\"", "    ```json"] + ["    " + line for line in text.splitlines()] + ["    ```", ""]


def _npz_block(path: str) -> list[str]:
    import numpy as np

    with np.load(path) as arrays:
        rows = [f"| `{k}` | `{arrays[k].shape}` | `{arrays[k].dtype}` |" for k in arrays.files]
    return ["| array | shape | dtype |", "| --- | --- | --- |", *rows, ""]


def _section(folder: str, args: list[str], descriptions: dict[str, str], what: str, json_files) -> list[str]:
    files = _files(folder)
    lines = [f"Made by `gd-jax {' '.join(args)} --out DIR` when this site was built:", "",
             "| file | what it holds |", "| --- | --- |"]
    for _, hits, text in _match(files, descriptions, what):
        shown = ", ".join(f"`{h}`" for h in hits[:3]) + (", ..." if len(hits) > 3 else "")
        lines.append(f"| {shown} | {text} |")
    lines += ["", "Every file is written to a temporary name and renamed into place, so a crash never leaves a "
              "half-written file.", ""]
    for name in json_files:
        lines += _json_block(os.path.join(folder, name), f"{name}, as written (lists cut to their first item)")
    lines += [f"`params.npz` of this {what}:", ""] + _npz_block(os.path.join(folder, "params.npz"))
    return lines


def folders_page() -> str:
    with tempfile.TemporaryDirectory(prefix="gd_jax_docs_") as tmp:
        run, sweep = os.path.join(tmp, "run"), os.path.join(tmp, "sweep")
        run_cli(TRAIN_ARGS, run)
        run_cli(SWEEP_ARGS, sweep)
        lines = [
            "# Run and sweep folders",
            "",
            "What `gd-jax train` and `gd-jax sweep` write. This page is made at build time from two real, "
            "small runs, so every file, key and array shape below is what the installed gd_jax writes. "
            "See [resume and checkpoints](../how-to/resume.md) for how they are used.",
            "",
            "## The run folder",
            "",
        ]
        lines += _section(run, TRAIN_ARGS, RUN_DESCRIPTIONS, "run folder", ["config.json", "history.json"])
        lines += ["## The sweep folder", ""]
        lines += _section(sweep, SWEEP_ARGS, SWEEP_DESCRIPTIONS, "sweep folder", ["config.json"])
        with open(os.path.join(sweep, "sweep.json")) as f:
            sweep_json = json.load(f)
        lines += ["`sweep.json` holds the keys " + ", ".join(f"`{k}`" for k in sweep_json) + "; one of its "
                  "`records`:", "", "```json", json.dumps(_shape(sweep_json["records"][0]), indent=2), "```", ""]
    return "\n".join(lines) + "\n"
