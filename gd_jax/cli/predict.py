"""``gd-jax predict``: a trained network's digits for a person's image files."""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Any

from gd_jax._src.images import MODES, find_images, load_trained_network, predict_images
from gd_jax._src.serialization import describe_file


def add_predict_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Adds ``gd-jax predict``'s arguments to ``parser`` (a sub-command's parser); returns it."""
    parser.add_argument("run", help="a run folder written by `gd-jax train` (or its params.npz), or a sweep folder "
                                    "with --model")
    parser.add_argument("--model", default=None, metavar="K",
                        help="with a sweep folder: its model K (an index) or coordinates such as "
                             "learning_rate=3,seed=1 (without it, the models are listed)")
    parser.add_argument("images", nargs="+", metavar="IMAGE",
                        help="PNG or JPEG files of single digits, any size, dark-on-light or light-on-dark; a folder "
                             "stands for every image in it, a quoted glob such as 'digits/*.png' for its matches")
    parser.add_argument("--json", action="store_true",
                        help="print one JSON object: each image's digit and ten output activations")
    parser.add_argument("--preprocess", choices=MODES, default="auto",
                        help="auto (default): 28x28 images as they are, others cropped, scaled to 20x20 and "
                             "centred by centre of mass as MNIST was made; mnist: that for every image; "
                             "none: images must be 28x28")
    return parser


def run_predict(args: argparse.Namespace) -> int:
    """Runs ``gd-jax predict`` on parsed arguments; returns the exit status.

    Prints each good image's digit and output activations (or one JSON object with
    ``--json``, its bad images under ``"errors"``); each bad image or argument that names no
    image gets one line on stderr naming it and why. Returns 0 when every image was
    predicted, 2 when any failed (or the run folder is wrong: then one line and nothing on
    stdout).
    """
    try:
        network = load_trained_network(args.run, model=args.model)
    except (ValueError, FileNotFoundError) as e:
        swapped = os.path.isfile(args.run) and (describe_file(args.run) or "").startswith("an image")
        hint = "; the run comes first: gd-jax predict RUN IMAGE..." if swapped else ""
        print(f"gd-jax predict: error: {_line(str(e))}{hint}", file=sys.stderr)
        return 2
    paths, problems = find_images(args.images)
    for problem in problems:
        print(f"gd-jax predict: error: {_line(problem)}", file=sys.stderr)
    failed: dict[int, str] = {}

    def report(index: int, error: Exception) -> None:
        failed[index] = _line(str(error))
        print(f"gd-jax predict: error: {failed[index]}", file=sys.stderr)

    result = None
    if paths:
        try:
            result = predict_images(network.params, paths, activation=network.activation, mode=args.preprocess,
                                    on_error=report)
        except (ValueError, FileNotFoundError) as e:  # the network itself does not fit images
            print(f"gd-jax predict: error: {_line(str(e))}", file=sys.stderr)
            return 2
    kept = [path for i, path in enumerate(paths) if i not in failed]
    digits: Any = result.digits if result is not None else []
    activations: Any = result.activations if result is not None else []
    if args.json:
        print(json.dumps({"run": args.run, "predictions": [
            {"image": image, "digit": int(digit), "activations": [float(a) for a in scores]}
            for image, digit, scores in zip(kept, digits, activations)],
            "errors": [*({"image": None, "error": p} for p in problems),
                       *({"image": paths[i], "error": message} for i, message in sorted(failed.items()))]}))
    else:
        names = [_shown(path) for path in kept]
        width = max(map(len, names), default=0)
        for image, digit, scores in zip(names, digits, activations):
            listed = "  ".join(f"{k}:{a:.3f}" for k, a in enumerate(scores))
            print(f"{image:<{width}}  {digit}   activations  {listed}")
    return 2 if problems or failed else 0


def _line(text: str) -> str:
    """A message as one printable line: whitespace runs to one space, an undecodable file name escaped."""
    return _shown(" ".join(text.split()))


def _shown(text: str) -> str:
    """``text`` as it can be printed: the bytes of an undecodable file name as backslash escapes."""
    return text.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
