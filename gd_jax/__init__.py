"""gd_jax: neural networks trained by gradient descent, the functional JAX way.

Parameters are pytrees, a cost is a pure ``cost(params, x, y)``, gradients come from
``jax.grad`` (``jax.vmap`` for per-example ones), and the update rule ``p - eta * g`` is
written out by hand. ``fit`` runs each epoch as one compiled ``lax.scan``.

Examples:
    >>> import jax, gd_jax as gd
    >>> train, test = gd.load_mnist("sample")
    >>> params = gd.init_mlp(jax.random.key(0), [784, 30, 10])
    >>> params, history = gd.fit(params, train, eval_data=test, epochs=2, batch_size=10,
    ...                          optimizer=gd.sgd(3.0), cost=gd.quadratic_cost, key=jax.random.key(1))
    >>> len(history), history.stop_reason
    (2, 'epochs')
    >>> 0.5 < gd.accuracy(params, test) <= 1.0   # chance is 0.1
    True
"""

from gd_jax._src.analysis import confusion_matrix, hidden_weight_images, misclassified, norms_recorder
from gd_jax._src.backprop import backprop
from gd_jax._src.checkpoint import (
    Checkpoint,
    CheckpointError,
    checkpoint_callback,
    latest_checkpoint,
    load_checkpoint,
    save_checkpoint,
)
from gd_jax._src.costs import COSTS, cross_entropy_cost, l2_penalty, log_likelihood_cost, quadratic_cost, with_l2
from gd_jax._src.data.dataset import Dataset
from gd_jax._src.data.genuine import read_genuine_mnist
from gd_jax._src.data.idx import read_idx, write_idx
from gd_jax._src.data.mnist import load_mnist
from gd_jax._src.distributed import initialize_distributed
from gd_jax._src.epoch import TrainState, make_epoch, shuffled_order
from gd_jax._src.gradients import batch_grad, finite_difference_grad, per_example_grads
from gd_jax._src.images import load_trained_network, predict_images, preprocess_digit
from gd_jax._src.model import combine_params, partition_params
from gd_jax._src.network import ACTIVATIONS, forward, init_mlp, predict
from gd_jax._src.optim import (
    GradientTransformation,
    ScaleState,
    add_decayed_weights,
    apply_updates,
    chain,
    scale_learning_rate,
    sgd,
    sgd_update,
)
from gd_jax._src.parallel import PeerLostError, data_mesh, make_data_parallel_epoch, use_cpu_devices
from gd_jax._src.plotting import plot_history, write_run_figures
from gd_jax._src.seeds import seed_keys
from gd_jax._src.serialization import load_params, save_params
from gd_jax._src.sweep import SweepEpochEnd, SweepResult, grid_points, make_sweep_epoch, model_axes, sweep
from gd_jax._src.sweep_folder import load_sweep
from gd_jax._src.tensorboard import write_run_events
from gd_jax._src.train import DivergenceError, EpochEnd, History, accuracy, evaluate, fit, mlp_predict

__version__ = "0.1.0"

__all__ = [
    "ACTIVATIONS",
    "COSTS",
    "Checkpoint",
    "CheckpointError",
    "Dataset",
    "DivergenceError",
    "EpochEnd",
    "GradientTransformation",
    "History",
    "PeerLostError",
    "ScaleState",
    "SweepEpochEnd",
    "SweepResult",
    "TrainState",
    "accuracy",
    "add_decayed_weights",
    "apply_updates",
    "backprop",
    "batch_grad",
    "chain",
    "checkpoint_callback",
    "combine_params",
    "confusion_matrix",
    "cross_entropy_cost",
    "data_mesh",
    "evaluate",
    "finite_difference_grad",
    "fit",
    "forward",
    "grid_points",
    "hidden_weight_images",
    "init_mlp",
    "initialize_distributed",
    "l2_penalty",
    "latest_checkpoint",
    "load_checkpoint",
    "load_mnist",
    "load_params",
    "load_sweep",
    "load_trained_network",
    "log_likelihood_cost",
    "make_data_parallel_epoch",
    "make_epoch",
    "make_sweep_epoch",
    "misclassified",
    "mlp_predict",
    "model_axes",
    "norms_recorder",
    "partition_params",
    "per_example_grads",
    "plot_history",
    "predict",
    "predict_images",
    "preprocess_digit",
    "quadratic_cost",
    "read_genuine_mnist",
    "read_idx",
    "save_checkpoint",
    "save_params",
    "scale_learning_rate",
    "seed_keys",
    "sgd",
    "sgd_update",
    "shuffled_order",
    "sweep",
    "use_cpu_devices",
    "with_l2",
    "write_idx",
    "write_run_events",
    "write_run_figures",
]
