"""gd_jax: neural networks trained by gradient descent, the functional JAX way.

Parameters are pytrees, a cost is a pure ``cost(params, x, y)``, gradients come from
``jax.grad`` (``jax.vmap`` for per-example ones), and the update rule ``p - eta * g`` is
written out by hand. ``fit`` runs each epoch as one compiled ``lax.scan``.

Example::

    import jax, gd_jax as gd

    train, test = gd.load_mnist("sample")
    params = gd.init_mlp(jax.random.key(0), [784, 30, 10])
    params, history = gd.fit(params, train, eval_data=test, epochs=30, batch_size=10,
                             optimizer=gd.sgd(3.0), cost=gd.quadratic_cost, key=jax.random.key(1))
    gd.accuracy(params, test)
"""

from gd_jax.analysis import confusion_matrix, hidden_weight_images, misclassified, norms_recorder
from gd_jax.backprop import backprop
from gd_jax.checkpoint import (
    Checkpoint,
    CheckpointError,
    checkpoint_callback,
    latest_checkpoint,
    load_checkpoint,
    save_checkpoint,
)
from gd_jax.costs import COSTS, cross_entropy_cost, l2_penalty, log_likelihood_cost, quadratic_cost, with_l2
from gd_jax.data import Dataset, load_mnist, read_idx, write_idx
from gd_jax.data.genuine import read_genuine_mnist
from gd_jax.gradients import batch_grad, finite_difference_grad, per_example_grads
from gd_jax.images import load_trained_network, predict_images, preprocess_digit
from gd_jax.network import ACTIVATIONS, forward, init_mlp, predict
from gd_jax.optim import (
    GradientTransformation,
    ScaleState,
    add_decayed_weights,
    apply_updates,
    chain,
    scale_learning_rate,
    sgd,
    sgd_update,
)
from gd_jax.plotting import plot_history, write_run_figures
from gd_jax.serialization import load_params, save_params
from gd_jax.sweep import SweepEpochEnd, SweepResult, grid_points, make_sweep_epoch, model_axes, seed_keys, sweep
from gd_jax.tensorboard import write_run_events
from gd_jax.train import (
    DivergenceError,
    EpochEnd,
    History,
    TrainState,
    accuracy,
    evaluate,
    fit,
    make_epoch,
    mlp_predict,
    shuffled_order,
)

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
    "confusion_matrix",
    "cross_entropy_cost",
    "evaluate",
    "finite_difference_grad",
    "fit",
    "forward",
    "grid_points",
    "hidden_weight_images",
    "init_mlp",
    "l2_penalty",
    "latest_checkpoint",
    "load_checkpoint",
    "load_mnist",
    "load_params",
    "load_trained_network",
    "log_likelihood_cost",
    "make_epoch",
    "make_sweep_epoch",
    "misclassified",
    "mlp_predict",
    "model_axes",
    "norms_recorder",
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
    "with_l2",
    "write_idx",
    "write_run_events",
    "write_run_figures",
]
