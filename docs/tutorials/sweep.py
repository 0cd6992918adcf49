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
# # A sweep and how to read it
#
# `gd.sweep` trains a whole grid of hyperparameters times seeds as **one compiled program**: the
# models are stacked along a leading axis and trained together, one compile whatever the size of
# the grid. Each model is exactly the model `gd.fit` would train with the same settings and seed.
# This page's sweep runs when the site is built, on the embedded sample.

# %%
import functools
import tempfile

import jax
import matplotlib.pyplot as plt
import numpy as np

import gd_jax as gd

train, validation, test = gd.load_mnist("sample", validation=True)
result = gd.sweep(
    functools.partial(gd.init_mlp, sizes=[784, 30, 10]), train, eval_data=validation,
    grid={"learning_rate": [0.3, 1.0, 3.0, 10.0]}, seeds=3,          # 4 x 3 = 12 models
    make_optimizer=lambda h: gd.sgd(h["learning_rate"]), cost=gd.quadratic_cost,
    epochs=5, batch_size=10, shuffle="shared")
print(len(result.models), "models")

# %% [markdown]
# `make_optimizer(h)` receives each model's values as scalar arrays (traced: use them in
# arithmetic, not in a Python `if`); anything an optimizer or a cost takes can be swept the same
# way (`make_cost=`). `shuffle="shared"` gives every model the same batch order, so that seeds
# vary only the initialisation; the default `"per_model"` gives each seed its own order.
#
# ## Reading it
#
# `result.records` is a tidy table: one record per model and epoch.

# %%
result.records[0]

# %%
result.summary("eval_accuracy")

# %% [markdown]
# `best` picks the grid point with the best mean over seeds (of the final epoch);
# `select` finds model indices by their coordinates (seeds vary fastest):

# %%
best = result.best("eval_accuracy")
print(best)
print(result.select(learning_rate=3.0))

# %%
final = {}
for model, value in zip(result.models, result.final("eval_accuracy")):
    final.setdefault(model["learning_rate"], []).append(value)
fig, ax = plt.subplots(figsize=(6, 3.5))
for eta, values in final.items():
    ax.scatter([eta] * len(values), values, color="tab:blue")
ax.plot(list(final), [np.mean(v) for v in final.values()], color="tab:orange", label="mean over seeds")
ax.set(xscale="log", xlabel="learning rate eta", ylabel="validation accuracy after 5 epochs")
ax.legend()
plt.show()

# %% [markdown]
# Select on the **validation** set, as here, then measure the chosen model once on the test set.
#
# ## Using one model afterwards
#
# `result.params` holds all the models stacked (a leading axis of 12); `model_params(i)` is one
# model's ordinary parameters, usable with every gd_jax function:

# %%
i = result.select(learning_rate=best["learning_rate"])[0]
params = result.model_params(i)
print(jax.tree.map(lambda a: a.shape, params))
print(f"test accuracy of model {i}: {gd.accuracy(params, test):.4f}")
folder = tempfile.mkdtemp()
gd.save_params(f"{folder}/chosen.npz", params)  # the same .npz format as a run folder's params.npz
print(jax.tree.map(np.shape, gd.load_params(f"{folder}/chosen.npz")))

# %% [markdown]
# `result.to_csv()` and `result.to_json()` write the records for pandas or a spreadsheet. From
# the command line, `gd-jax sweep --eta 0.3,1,3,10 --seeds 3` trains the same kind of grid and
# writes a [sweep folder](../../reference/folders/); the
# [learning-rate results](../../results/learning_rate/) are a sweep of 110 models on full MNIST.
