"""What the subcommands share: the parser, the data and device flags, and the process's set-up.

One place for every flag more than one subcommand takes, so that ``train`` and ``sweep``
parse them alike.
"""

from __future__ import annotations

import argparse
import os

import jax

from gd_jax._src.costs import COSTS
from gd_jax._src.data.mnist import SOURCES, load_mnist
from gd_jax._src.network import ACTIVATIONS, INITS
from gd_jax.cli.errors import BadInput, bad_input

EXIT_BAD_INPUT = 2
EXIT_DIVERGED = 3
EXIT_INTERRUPTED = 130
EXIT_BROKEN_PIPE = 141  # 128 + SIGPIPE: the reader of stdout quit early

# Where the persistent compilation cache lives; "off" (or 0, false, no, empty) turns it off.
COMPILE_CACHE_ENV = "GD_JAX_COMPILE_CACHE"
# How to get JAX for an accelerator, by the platform JAX calls it.
INSTALL_HINT = {
    "cuda": 'pip install -U "jax[cuda12]" (an NVIDIA GPU with its driver is needed)',
    "gpu": 'pip install -U "jax[cuda12]" (an NVIDIA GPU with its driver is needed)',
    "rocm": "install JAX's ROCm build (see JAX's installation guide; an AMD GPU is needed)",
    "tpu": 'pip install -U "jax[tpu]" (on a Cloud TPU VM)',
}
PLATFORMS = {"cpu": "cpu", "gpu": "cuda", "tpu": "tpu"}


class UsageError(BadInput):
    """A command-line mistake: reported in one line, exit status 2."""


class Parser(argparse.ArgumentParser):
    def error(self, message: str):  # one line instead of usage + error
        raise UsageError(f"{message} (see '{self.prog} --help')")


def sizes_flag(text: str) -> list[int]:
    entries = text.replace(" ", "").split(",")
    if entries and not entries[-1]:  # a trailing comma: harmless
        entries.pop()
    if "" in entries and any(entries):  # 784,,10 would silently drop a layer
        raise argparse.ArgumentTypeError(f"--sizes has an empty entry in {text!r}; write one integer per layer, "
                                         "like 784,30,10")
    try:
        sizes = [int(s) for s in entries if s]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"--sizes wants comma-separated integers like 784,30,10, got {text!r}") from None
    return sizes


def max_growth_flag(text: str) -> float | None:
    if text.strip().lower() in ("none", "off"):
        return None
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"--max-growth wants a number > 1 or 'off', got {text!r}") from None
    return value


def add_data_and_device_flags(p: argparse.ArgumentParser) -> None:
    """``--dataset``, where its files are, ``--device`` and the compile cache: every computing subcommand's."""
    p.add_argument("--dataset", choices=SOURCES, default="sample",
                   help="sample: embedded 5,000/10,000 real MNIST (offline); idx: four IDX files in --idx-dir; "
                        "mnist: full MNIST via tensorflow-datasets (default: sample)")
    p.add_argument("--idx-dir", help="folder of the four MNIST IDX files (with --dataset idx or mnist)")
    p.add_argument("--data-dir", help="tensorflow-datasets data folder (with --dataset mnist; default "
                                      "$TFDS_DATA_DIR)")
    p.add_argument("--download", action="store_true", help="let --dataset mnist download the data")
    p.add_argument("--device", choices=sorted(PLATFORMS),
                   help="where to compute (default: JAX's choice, the accelerator if JAX has one)")
    p.add_argument("--no-compile-cache", action="store_true",
                   help=f"do not use the persistent compilation cache (also: {COMPILE_CACHE_ENV}=off)")
    p.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help="show tracebacks for errors")


def compile_cache_folder(disabled: bool = False) -> str | None:
    """The persistent compilation cache folder: ``$GD_JAX_COMPILE_CACHE``, else the user's cache folder.

    ``$XDG_CACHE_HOME/gd_jax/jax-compile`` (``~/.cache/gd_jax/jax-compile`` without it).
    None when ``disabled`` or ``$GD_JAX_COMPILE_CACHE`` is ``off``, ``0``, ``false``, ``no`` or empty.
    """
    if disabled:
        return None
    chosen = os.environ.get(COMPILE_CACHE_ENV)
    if chosen is not None:
        return None if chosen.strip().lower() in ("", "off", "0", "false", "no") else os.path.expanduser(chosen)
    cache_home = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(cache_home, "gd_jax", "jax-compile")


def use_compile_cache(folder: str | None) -> None:
    """Lets JAX keep compiled programs in ``folder`` across processes, so a repeated command compiles nothing."""
    if folder is None:
        return

    jax.config.update("jax_compilation_cache_dir", folder)
    # The epoch compiles in well under JAX's default 1 s threshold on a CPU, yet dominates a short run.
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)


def select_device(device: str | None):
    """The device to compute on; one line naming the platform and how to get it when JAX cannot use it."""

    wanted = PLATFORMS.get(device) if device else None
    if wanted is not None:
        jax.config.update("jax_platforms", wanted)  # before JAX starts a backend; ignored after
    platform = wanted or os.environ.get("JAXPLATFORMS") or jax.config.jax_platforms or None  # type: ignore[attr-defined]
    try:
        devices = jax.devices(device) if device else jax.devices()
    except (RuntimeError, AssertionError) as e:  # JAX's errors (an assertion for some) when a platform fails to start
        name = platform or "the default"
        first = name.split(",")[0]
        hint = INSTALL_HINT.get(first, "check JAX's installation guide")
        reason = str(e).split("\n")[0] or "no such device here"
        raise BadInput(f"JAX cannot use the {name!r} platform on this machine ({reason}); to use it, {hint}; or run "
                       "on the CPU with --device cpu") from e
    return devices[0]


def check_data_flags(dataset: str, idx_dir: str | None, data_dir: str | None, download: bool) -> None:
    if idx_dir is not None and dataset not in ("idx", "mnist"):
        raise UsageError(f"--idx-dir is read only with --dataset idx (any IDX files) or --dataset mnist (the genuine "
                         f"files); add one of them, or drop --idx-dir (--dataset is {dataset})")
    if data_dir is not None and dataset != "mnist":
        raise UsageError(f"--data-dir is read only with --dataset mnist; add --dataset mnist, or drop --data-dir "
                         f"(--dataset is {dataset})")
    if download and dataset != "mnist":
        raise UsageError(f"--download is only for --dataset mnist; add --dataset mnist, or drop --download "
                         f"(--dataset is {dataset})")


def load_data(dataset: str, *, idx_dir, data_dir, download: bool, validation: bool = False):
    with bad_input():
        return load_mnist(dataset, validation=validation, idx_dir=idx_dir, data_dir=data_dir, download=download)


def add_network_flags(p: argparse.ArgumentParser) -> None:
    """The network and the training loop, alike for ``train`` and ``sweep`` (whose models all share them)."""
    p.add_argument("--sizes", type=sizes_flag, default=[784, 30, 10], help="layer sizes (default 784,30,10)")
    p.add_argument("--epochs", type=int, default=30, help="epochs in all (default 30)")
    p.add_argument("--batch-size", type=int, default=10, help="mini-batch size (default 10)")
    p.add_argument("--nesterov", action="store_true", help="Nesterov momentum (needs --momentum)")
    p.add_argument("--cost", choices=list(COSTS), default="quadratic", help="cost function (default quadratic)")
    p.add_argument("--activation", choices=list(ACTIVATIONS), default="sigmoid", help="neurons (default sigmoid)")
    p.add_argument("--init", choices=INITS, default="normal",
                   help="normal: N(0,1) weights (chapter 1); scaled: N(0,1/n_in) (chapter 3) (default normal)")


def add_run_folder_flags(p: argparse.ArgumentParser, *, what: str) -> None:
    """When to stop, what to evaluate on, and the folder ``what`` (``"run"`` or ``"sweep"``) is written to."""
    p.add_argument("--target-cost", type=float, default=None,
                   help="stop once the training cost is at or below this value")
    p.add_argument("--max-growth", type=max_growth_flag, default=10.0,
                   help="count a model as diverged when its parameters' root mean square grows more than this many "
                        "times in one epoch; 'off' never (default 10)")
    p.add_argument("--validation", action="store_true",
                   help="evaluate on a validation set held out of the training data (test reported at the end)")
    p.add_argument("--out", help=f"{what} folder (default runs/<date-time>)")
    p.add_argument("--overwrite", action="store_true", help=f"replace the files of an existing {what} folder")
    p.add_argument("--resume", metavar="DIR",
                   help=f"continue the {what} in DIR from its newest checkpoint, with its saved settings")
    p.add_argument("--no-progress", action="store_true", help="print nothing per epoch")
    p.add_argument("--no-tensorboard", action="store_true",
                   help="write no TensorBoard event files (the figures and records are written all the same)")
    p.add_argument("--no-figures", action="store_true",
                   help=f"draw no PNG figures, and remove those an earlier segment drew (the records, parameters "
                        f"and TensorBoard scalars are written all the same); a {what} without them ends seconds "
                        "sooner")

