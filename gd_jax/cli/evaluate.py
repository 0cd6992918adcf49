"""``gd-jax evaluate``: the test cost and accuracy of a trained run's parameters."""

from __future__ import annotations

import argparse
import functools
import json
import os

import gd_jax as gd
from gd_jax._src.costs import COSTS
from gd_jax._src.data.dataset import check_dataset
from gd_jax._src.images import load_trained_network
from gd_jax._src.network import ACTIVATIONS, layer_sizes
from gd_jax._src.sweep_folder import is_sweep_folder
from gd_jax.cli import run_folder
from gd_jax.cli.errors import bad_input
from gd_jax.cli.flags import add_data_and_device_flags, check_data_flags, load_data


def add_parser(commands: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Adds ``evaluate`` and its options to the subcommands."""
    evaluate = commands.add_parser("evaluate", help="evaluate a trained network",
                                   description="Cost and accuracy of a run's params.npz on a dataset's test split; "
                                               "the data options default to the run's own.")
    evaluate.add_argument("run", help="a run folder, a params .npz file, or a sweep folder (with --model)")
    evaluate.add_argument("--model", default=None, metavar="K",
                          help="with a sweep folder: its model K (an index) or coordinates such as "
                               "learning_rate=3,seed=1 (without it, the models are listed)")
    evaluate.add_argument("--cost", choices=list(COSTS), default=None, help="cost (default: the run's)")
    evaluate.add_argument("--activation", choices=list(ACTIVATIONS), default=None, help="neurons (default: the run's)")
    add_data_and_device_flags(evaluate)
    return evaluate


def run_evaluate(args: argparse.Namespace, given: set[str], command: list[str]) -> int:
    path, config = args.run, {}
    if is_sweep_folder(path) or args.model is not None:
        with bad_input():
            network = load_trained_network(path, model=args.model)
        params, config = network.params, network.config
    else:
        if os.path.isdir(path):
            config_path = os.path.join(path, run_folder.CONFIG)
            if os.path.isfile(config_path):
                config = run_folder.read_json(config_path)
            path = os.path.join(path, "params.npz")
        with bad_input():
            params = gd.load_params(path)
    cost_name = args.cost or config.get("cost", "quadratic")
    activation = args.activation or config.get("activation", "sigmoid")
    # The data the run trained on unless told otherwise: a --dataset idx run is evaluated on its own IDX files.
    data = {k: getattr(args, k) if k in given else config.get(k, getattr(args, k))
            for k in ("dataset", "idx_dir", "data_dir")}
    if "dataset" in given and args.dataset != config.get("dataset"):
        data["idx_dir"] = args.idx_dir  # another data set: the run's folders do not apply
        data["data_dir"] = args.data_dir
    check_data_flags(data["dataset"], data["idx_dir"], data["data_dir"], args.download)
    test = load_data(data["dataset"], idx_dir=data["idx_dir"], data_dir=data["data_dir"], download=args.download)[-1]
    sizes = layer_sizes(params)
    with bad_input():
        check_dataset(test, n_inputs=sizes[0], n_classes=sizes[-1], name=f"{data['dataset']} test data")
    cost = functools.partial(COSTS[cost_name], activation=activation)
    test_cost, test_accuracy = gd.evaluate(params, test, cost=cost, activation=activation)
    model = {"model": config["model"]} if "model" in config else {}
    print(json.dumps({"params": path, **model, "dataset": data["dataset"], "idx_dir": data["idx_dir"], "n": test.size,
                      "cost": cost_name, "test_cost": test_cost, "test_accuracy": test_accuracy}))
    return 0
