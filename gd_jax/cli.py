"""The ``gd-jax`` command: ``train`` a network and ``evaluate`` a trained one.

Exit status: 0 done; 2 bad input (one line on stderr naming the fix; ``--debug`` shows the
traceback); 3 the run diverged (the run folder keeps the last finite epoch); 130 interrupted.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import platform
import sys
import time
from collections.abc import Sequence
from typing import Any

EXIT_BAD_INPUT = 2
EXIT_DIVERGED = 3
EXIT_INTERRUPTED = 130

# The files a run folder holds; --overwrite removes exactly these, nothing else.
RUN_FILES = ("config.json", "history.json", "params.npz", "history.png")


class UsageError(ValueError):
    """A command-line mistake: reported in one line, exit status 2."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):  # one line instead of usage + error
        raise UsageError(f"{message} (see '{self.prog} --help')")


def _sizes(text: str) -> list[int]:
    try:
        sizes = [int(s) for s in text.replace(" ", "").split(",") if s]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"--sizes wants comma-separated integers like 784,30,10, got {text!r}") from None
    return sizes


def build_parser() -> argparse.ArgumentParser:
    from gd_jax.costs import COSTS
    from gd_jax.data.mnist import SOURCES
    from gd_jax.network import ACTIVATIONS, INITS

    parser = _Parser(prog="gd-jax", description="Train feed-forward networks by gradient descent in JAX.")
    parser.add_argument("--debug", action="store_true", help="show tracebacks for errors")
    commands = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    def data_options(p: argparse.ArgumentParser) -> None:
        p.add_argument("--dataset", choices=SOURCES, default="sample",
                       help="sample: embedded 5,000/10,000 real MNIST (offline); idx: four IDX files in --idx-dir; "
                            "mnist: full MNIST via tensorflow-datasets (default: sample)")
        p.add_argument("--idx-dir", help="folder of the four MNIST IDX files (for --dataset idx or mnist)")
        p.add_argument("--data-dir", help="tensorflow-datasets data folder (default $TFDS_DATA_DIR)")
        p.add_argument("--download", action="store_true", help="let --dataset mnist download the data")
        p.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help="show tracebacks for errors")

    train = commands.add_parser("train", help="train a network and write a run folder",
                                description="Train a network by mini-batch gradient descent; defaults are the "
                                            "textbook's chapter 1 run.")
    train.add_argument("--sizes", type=_sizes, default=[784, 30, 10], help="layer sizes (default 784,30,10)")
    train.add_argument("--epochs", type=int, default=30, help="epochs (default 30)")
    train.add_argument("--batch-size", type=int, default=10, help="mini-batch size (default 10)")
    train.add_argument("--learning-rate", "--eta", dest="learning_rate", type=float, default=3.0,
                       help="learning rate eta (default 3.0)")
    train.add_argument("--momentum", type=float, default=None, help="momentum coefficient in [0, 1) (default none)")
    train.add_argument("--nesterov", action="store_true", help="Nesterov momentum (needs --momentum)")
    train.add_argument("--cost", choices=list(COSTS), default="quadratic", help="cost function (default quadratic)")
    train.add_argument("--activation", choices=list(ACTIVATIONS), default="sigmoid", help="neurons (default sigmoid)")
    train.add_argument("--init", choices=INITS, default="normal",
                       help="normal: N(0,1) weights (chapter 1); scaled: N(0,1/n_in) (chapter 3) (default normal)")
    # Seed 2 is one of the 15 in 20 seeds whose textbook run does not stall (see README, "Known behaviour").
    train.add_argument("--seed", type=int, default=2, help="PRNG seed for initialisation and shuffling (default 2)")
    train.add_argument("--target-cost", type=float, default=None,
                       help="stop once the training cost is at or below this value")
    train.add_argument("--validation", action="store_true",
                       help="evaluate on a validation set held out of the training data (test reported at the end)")
    train.add_argument("--out", help="run folder (default runs/<date-time>)")
    train.add_argument("--overwrite", action="store_true", help="replace the files of an existing run folder")
    train.add_argument("--no-progress", action="store_true", help="no progress bar")
    data_options(train)

    evaluate = commands.add_parser("evaluate", help="evaluate a trained network",
                                   description="Cost and accuracy of a run's params.npz on a dataset's test split.")
    evaluate.add_argument("run", help="a run folder, or a params .npz file")
    evaluate.add_argument("--cost", choices=list(COSTS), default=None, help="cost (default: the run's)")
    evaluate.add_argument("--activation", choices=list(ACTIVATIONS), default=None, help="neurons (default: the run's)")
    data_options(evaluate)
    return parser


def _load_data(args: argparse.Namespace, *, validation: bool = False):
    from gd_jax.data.mnist import load_mnist

    return load_mnist(args.dataset, validation=validation, idx_dir=args.idx_dir, data_dir=args.data_dir,
                      download=args.download)


def _write_json(path: str, obj: Any) -> None:
    from gd_jax.serialization import atomic_write_bytes

    atomic_write_bytes(path, (json.dumps(obj, indent=2) + "\n").encode())


def _prepare_out(out: str | None, overwrite: bool) -> str:
    """Checks that the run folder can be written, without writing anything yet."""
    if out is None:
        out = os.path.join("runs", time.strftime("%Y%m%d-%H%M%S"))
    if os.path.exists(out) and not os.path.isdir(out):
        raise UsageError(f"--out {out!r} is a file, not a folder; choose another --out")
    if os.path.isdir(out) and os.listdir(out) and not overwrite:
        raise UsageError(
            f"run folder {out!r} already exists and is not empty; pass --overwrite or choose another --out")
    parent = os.path.dirname(os.path.abspath(out))
    while not os.path.exists(parent):
        parent = os.path.dirname(parent)
    target = out if os.path.isdir(out) else parent
    if not os.access(target, os.W_OK | os.X_OK):
        raise UsageError(f"cannot write run folder {out!r}: {target!r} is not writable; choose another --out")
    return out


def _train(args: argparse.Namespace) -> int:
    import jax

    import gd_jax as gd
    from gd_jax.costs import COSTS
    from gd_jax.data import check_dataset
    from gd_jax.plotting import plot_history
    from gd_jax.train import check_fit_arguments

    # Everything is validated before the run folder is touched, so a mistake writes nothing.
    optimizer = gd.sgd(args.learning_rate, momentum=args.momentum, nesterov=args.nesterov)
    cost = functools.partial(COSTS[args.cost], activation=args.activation)
    out = _prepare_out(args.out, args.overwrite)
    key = jax.random.key(args.seed)
    init_key, shuffle_key = jax.random.split(key)
    params = gd.init_mlp(init_key, args.sizes, args.init)
    splits = _load_data(args, validation=args.validation)
    train, test = splits[0], splits[-1]
    eval_data = splits[1] if args.validation else test
    check_fit_arguments(params, train, eval_data=eval_data, epochs=args.epochs, batch_size=args.batch_size,
                        target_cost=args.target_cost)
    check_dataset(test, n_inputs=args.sizes[0], n_classes=args.sizes[-1], name="test data")
    config = {
        "sizes": args.sizes, "epochs": args.epochs, "batch_size": args.batch_size,
        "learning_rate": args.learning_rate, "momentum": args.momentum, "nesterov": args.nesterov,
        "cost": args.cost, "activation": args.activation, "init": args.init, "seed": args.seed,
        "target_cost": args.target_cost, "dataset": args.dataset, "idx_dir": args.idx_dir,
        "data_dir": args.data_dir, "validation": args.validation,
        "n_train": train.size, "n_eval": eval_data.size,
        "gd_jax": gd.__version__, "jax": jax.__version__, "device": str(jax.devices()[0]),
        "python": platform.python_version(),
    }
    os.makedirs(out, exist_ok=True)
    if args.overwrite:
        for name in RUN_FILES:
            if os.path.exists(os.path.join(out, name)):
                os.unlink(os.path.join(out, name))
    _write_json(os.path.join(out, "config.json"), config)

    from tqdm import tqdm

    bar = tqdm(total=args.epochs, unit="epoch", disable=args.no_progress, file=sys.stderr, dynamic_ncols=True)

    def on_epoch_end(end: gd.EpochEnd) -> None:
        gd.save_params(os.path.join(out, "params.npz"), end.state.params)
        _write_json(os.path.join(out, "history.json"), {"config": config, **end.history.to_dict()})
        last = end.history.epochs[-1]
        bar.set_postfix(cost=f"{last['train_cost']:.4f}", acc=f"{last['eval_accuracy']:.4f}")
        bar.update(1)

    try:
        params, history = gd.fit(params, train, eval_data=eval_data, epochs=args.epochs,
                                 batch_size=args.batch_size, optimizer=optimizer, cost=cost, key=shuffle_key,
                                 activation=args.activation, target_cost=args.target_cost,
                                 on_epoch_end=on_epoch_end)
    finally:
        bar.close()
    test_cost, test_accuracy = gd.evaluate(params, test, cost=cost, activation=args.activation)
    gd.save_params(os.path.join(out, "params.npz"), params)
    _write_json(os.path.join(out, "history.json"), {
        "config": config, **history.to_dict(), "test_cost": test_cost, "test_accuracy": test_accuracy})
    if len(history):
        plot_history(history, os.path.join(out, "history.png"),
                     title=f"{args.sizes}, {args.cost} cost, eta={args.learning_rate}, batch {args.batch_size}")
    print(f"test accuracy {test_accuracy:.4f} ({round(test_accuracy * test.size)} / {test.size}), "
          f"test cost {test_cost:.4f}, {len(history)} epochs in {sum(history['seconds']):.1f} s; run folder {out}")
    return 0


def _evaluate(args: argparse.Namespace) -> int:
    import gd_jax as gd
    from gd_jax.costs import COSTS
    from gd_jax.data import check_dataset
    from gd_jax.network import layer_sizes

    path, config = args.run, {}
    if os.path.isdir(path):
        config_path = os.path.join(path, "config.json")
        if os.path.isfile(config_path):
            with open(config_path) as f:
                config = json.load(f)
        path = os.path.join(path, "params.npz")
    params = gd.load_params(path)
    cost_name = args.cost or config.get("cost", "quadratic")
    activation = args.activation or config.get("activation", "sigmoid")
    test = _load_data(args)[-1]
    sizes = layer_sizes(params)
    check_dataset(test, n_inputs=sizes[0], n_classes=sizes[-1], name=f"{args.dataset} test data")
    cost = functools.partial(COSTS[cost_name], activation=activation)
    test_cost, test_accuracy = gd.evaluate(params, test, cost=cost, activation=activation)
    print(json.dumps({"params": path, "dataset": args.dataset, "n": test.size, "cost": cost_name,
                      "test_cost": test_cost, "test_accuracy": test_accuracy}))
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Runs the command line; returns the exit status."""
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in argv
    try:
        args = build_parser().parse_args(argv)
        return {"train": _train, "evaluate": _evaluate}[args.command](args)
    except (UsageError, ValueError, FileNotFoundError, NotADirectoryError, PermissionError) as e:
        if debug:
            raise
        print(f"gd-jax: error: {e}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except KeyboardInterrupt:
        print("gd-jax: interrupted; files in the run folder are those of the last finished epoch", file=sys.stderr)
        return EXIT_INTERRUPTED
    except Exception as e:  # a diverged run, reported by name
        from gd_jax.train import DivergenceError

        if isinstance(e, DivergenceError) and not debug:
            print(f"gd-jax: training diverged: {e}; the run folder keeps epoch {e.epoch - 1}", file=sys.stderr)
            return EXIT_DIVERGED
        raise


if __name__ == "__main__":
    sys.exit(main())
