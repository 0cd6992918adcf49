# ---
# jupyter:
#   jupytext:
#     text_representation:
#       extension: .py
#       format_name: percent
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # The textbook network from scratch
#
# This tutorial builds Nielsen's network `[784, 30, 10]` piece by piece and checks each piece
# against an independent reference: the cost by hand, `jax.grad` against the textbook's four
# backpropagation equations in numpy (`gd.backprop`), the update rule against `optax.sgd`, and
# finally the whole training loop, `gd.fit`. Every output and figure on this page was made when
# the site was built, on the MNIST sample embedded in gd_jax (5,000 training digits, the official
# 10,000 test digits).
#
# ## The data and the network

# %%
import jax
import jax.numpy as jnp
import matplotlib.pyplot as plt
import numpy as np
import optax

import gd_jax as gd

train, test = gd.load_mnist("sample")
print(train.x.shape, train.x.dtype, train.y.shape, train.y.dtype)
print(test.x.shape)

# %% [markdown]
# A network is a plain list of layers, each a dict of a weight matrix `w` of shape `(n_in, n_out)`
# and a bias vector `b`; inputs are batch-first rows, so a layer computes `x @ w + b`. The
# textbook (chapter 1) draws every weight and bias from N(0, 1):

# %%
params = gd.init_mlp(jax.random.key(0), [784, 30, 10])
print([{k: v.shape for k, v in layer.items()} for layer in params])
a = gd.predict(params, train.x[:5])  # sigmoid activations of the output layer
print(a.shape, "predicted digits:", a.argmax(axis=1), "true:", train.y[:5])

# %% [markdown]
# ## The cost
#
# The quadratic cost of a mini-batch is the mean over its examples of `1/2 ||y - a||^2`, with
# `y` the one-hot target. Every cost in gd_jax is a pure function `cost(params, x, y)` that
# averages over the batch, so that its gradient is the mini-batch gradient. Written out by hand:

# %%
x, labels = train.x[:10], train.y[:10]
y = jax.nn.one_hot(labels, 10)


def my_quadratic_cost(params, x, y):
    a = x
    for layer in params:
        a = jax.nn.sigmoid(a @ layer["w"] + layer["b"])
    return jnp.mean(0.5 * jnp.sum((y - a) ** 2, axis=1))


print(my_quadratic_cost(params, x, y), gd.quadratic_cost(params, x, y))

# %% [markdown]
# ## The gradient: `jax.grad` against backpropagation
#
# `jax.grad` differentiates the cost with respect to its first argument and returns a pytree of
# the same structure as `params`. `gd.backprop` is the textbook's algorithm, the four equations
# of chapter 2, written in numpy: an independent reference.

# %%
g = jax.grad(gd.quadratic_cost)(params, x, y)
reference = gd.backprop(params, x, y)
for i, (mine, theirs) in enumerate(zip(g, reference)):
    for name in ("w", "b"):
        diff = np.max(np.abs(np.asarray(mine[name]) - theirs[name]))
        print(f"layer {i} {name}: shape {mine[name].shape}, largest difference {diff:.1e}")

# %% [markdown]
# The differences are float32 rounding. The mini-batch gradient is also the mean of the
# per-example gradients, which `gd.per_example_grads` computes with `jax.vmap`:

# %%
per_example = gd.per_example_grads(gd.quadratic_cost, params, x, y)
print(per_example[0]["w"].shape)  # a leading batch axis of 10
print(np.max(np.abs(per_example[0]["w"].mean(0) - g[0]["w"])))

# %% [markdown]
# ## The update rule against `optax.sgd`
#
# Gradient descent moves every parameter against its gradient, `p -> p - eta * g`.
# `gd.sgd_update` is that line; `gd.sgd` is the same rule as an optax-style optimizer
# (`init` / `update`), written by hand. Both give exactly what `optax.sgd` gives:

# %%
eta = 3.0
by_hand = gd.sgd_update(params, g, learning_rate=eta)

opt = optax.sgd(eta)
updates, _ = opt.update(g, opt.init(params), params)
by_optax = optax.apply_updates(params, updates)

mine = gd.sgd(eta)
updates, _ = mine.update(g, mine.init(params), params)
by_gd_sgd = gd.apply_updates(params, updates)

same = jax.tree.map(lambda p, q, r: bool(jnp.array_equal(p, q) and jnp.array_equal(q, r)),
                    by_hand, by_optax, by_gd_sgd)
print(same)

# %% [markdown]
# ## Training: `gd.fit`
#
# `gd.fit` shuffles the training set each epoch, cuts it into mini-batches and applies one
# optimizer step per mini-batch, the whole epoch compiled as one `jax.lax.scan`. Here is the
# textbook's run: 30 epochs, mini-batches of 10, eta 3.0. Every random choice comes from `key`.

# %%
params, history = gd.fit(params, train, eval_data=test, epochs=30, batch_size=10,
                         optimizer=gd.sgd(3.0), cost=gd.quadratic_cost, key=jax.random.key(1))
print(f"compiled in {history.compile_seconds:.1f} s; {len(history)} epochs; stop reason {history.stop_reason!r}")
print(f"test accuracy after the last epoch: {gd.accuracy(params, test):.4f}")

# %%
epochs = [r["epoch"] for r in history.epochs]
fig, (left, right) = plt.subplots(1, 2, figsize=(10, 3.5))
left.plot(epochs, history["train_cost"], label="training data")
left.plot(epochs, history["eval_cost"], label="test data")
left.set(xlabel="epoch", ylabel="quadratic cost", title="cost")
right.plot(epochs, history["train_accuracy"], label="training data")
right.plot(epochs, history["eval_accuracy"], label="test data")
right.set(xlabel="epoch", ylabel="accuracy", title="accuracy")
right.legend()
fig.tight_layout()
plt.show()

# %% [markdown]
# The test accuracy is below the textbook's 95% because the sample has a tenth of MNIST's
# training digits; the [results](../../results/chapter1/) reproduce the book on full MNIST.
# `history.to_dict()` is JSON; the [run folder](../../reference/folders/) of `gd-jax train` holds the
# same record.
#
# Where the network errs, as a confusion matrix (rows: the true digit, columns: the answer):

# %%
print(gd.confusion_matrix(params, test))
