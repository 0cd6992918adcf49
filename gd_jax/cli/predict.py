"""``gd-jax predict``: a trained network's digits for a person's image files."""

from __future__ import annotations

import argparse
import json
import sys

from gd_jax._src.images import MODES, load_trained_network, predict_images


def add_predict_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Adds ``gd-jax predict``'s arguments to ``parser`` (a sub-command's parser); returns it."""
    parser.add_argument("run", help="a run folder written by `gd-jax train` (or its params.npz), or a sweep folder "
                                    "with --model")
    parser.add_argument("--model", default=None, metavar="K",
                        help="with a sweep folder: its model K (an index) or coordinates such as "
                             "learning_rate=3,seed=1 (without it, the models are listed)")
    parser.add_argument("images", nargs="+", metavar="IMAGE",
                        help="PNG or JPEG files of single digits, any size, dark-on-light or light-on-dark")
    parser.add_argument("--json", action="store_true",
                        help="print one JSON object: each image's digit and ten output activations")
    parser.add_argument("--preprocess", choices=MODES, default="auto",
                        help="auto (default): 28x28 images as they are, others cropped, scaled to 20x20 and "
                             "centred by centre of mass as MNIST was made; mnist: that for every image; "
                             "none: images must be 28x28")
    return parser


def run_predict(args: argparse.Namespace) -> int:
    """Runs ``gd-jax predict`` on parsed arguments; returns the exit status.

    Prints each image's digit and output activations (or one JSON object with ``--json``) and
    returns 0; bad input (a wrong run folder, an unreadable or empty image) prints one line on
    stderr, nothing on stdout, and returns 2.
    """
    try:
        network = load_trained_network(args.run, model=args.model)
        result = predict_images(network.params, args.images, activation=network.activation, mode=args.preprocess)
    except (ValueError, FileNotFoundError) as e:
        print(f"gd-jax predict: error: {e}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps({"run": args.run, "predictions": [
            {"image": image, "digit": int(digit), "activations": [float(a) for a in scores]}
            for image, digit, scores in zip(args.images, result.digits, result.activations)]}))
        return 0
    width = max(len(image) for image in args.images)
    for image, digit, scores in zip(args.images, result.digits, result.activations):
        listed = "  ".join(f"{k}:{a:.3f}" for k, a in enumerate(scores))
        print(f"{image:<{width}}  {digit}   activations  {listed}")
    return 0
