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
# # Chapter 3's tools
#
# Chapter 3 of the textbook improves on the chapter 1 network with a handful of tools: the
# cross-entropy cost, L2 regularisation, weights scaled by `1/sqrt(n_in)`, early stopping on a
# validation set, and a learning rate halved when progress stalls. gd_jax has each as one
# argument or one function. Every figure here is made when the site is built, on the embedded
# sample; runs are short so that the page builds in seconds, so read the trends, not the
# digits (the [chapter 3 results](../../results/chapter3/) are on full MNIST, over seeds).

# %%

import jax
import matplotlib.pyplot as plt

import gd_jax as gd

train, validation, test = gd.load_mnist("sample", validation=True)
print(train.size, validation.size, test.size)

# %% [markdown]
# `validation=True` holds out the last sixth of the sample's training digits. **Choose settings
# on the validation set, never on the test set**: the test digits are for the one final figure.
#
# ## Cross-entropy and scaled initialisation
#
# With sigmoid outputs and the quadratic cost, the output error carries a factor `sigma'(z)`,
# which vanishes when a neuron saturates: learning slows. The cross-entropy cost has no such
# factor. N(0, 1) weights over 784 inputs start most hidden neurons saturated; N(0, 1/n_in)
# weights (`init="scaled"`) do not. Three short runs, the same seed:


# %%
def run(cost, init, eta, epochs=8, data=train, **kwargs):
    params = gd.init_mlp(jax.random.key(0), [784, 30, 10], init=init)
    return gd.fit(params, data, eval_data=validation, epochs=epochs, batch_size=10, optimizer=gd.sgd(eta),
                  cost=cost, key=jax.random.key(1), **kwargs)


runs = {
    "quadratic, N(0, 1)": run(gd.quadratic_cost, "normal", 3.0),
    "cross-entropy, N(0, 1)": run(gd.cross_entropy_cost, "normal", 0.5),
    "cross-entropy, N(0, 1/n_in)": run(gd.cross_entropy_cost, "scaled", 0.5),
}
fig, ax = plt.subplots(figsize=(7, 4))
for label, (_, history) in runs.items():
    ax.plot([r["epoch"] for r in history.epochs], history["eval_accuracy"], marker="o", label=label)
ax.set(xlabel="epoch", ylabel="validation accuracy", title="first epochs on the sample")
ax.legend()
plt.show()

# %% [markdown]
# ## L2 regularisation against overfitting
#
# On only 1,000 training digits the network soon fits them almost perfectly while its validation
# accuracy stops improving: it overfits. `gd.with_l2(cost, lmbda, n)` adds the textbook's term
# `lambda/(2n) sum w^2` (weights only, `n` the size of the whole training set):

# %%
small = train.take(1000)
plain = run(gd.cross_entropy_cost, "normal", 0.5, epochs=60, data=small)[1]
l2 = run(gd.with_l2(gd.cross_entropy_cost, lmbda=0.1, n=small.size), "normal", 0.5, epochs=60, data=small)[1]

fig, ax = plt.subplots(figsize=(7, 4))
for label, history in (("no regularisation", plain), ("L2, lambda 0.1", l2)):
    line, = ax.plot(history["train_accuracy"], label=f"{label}: training")
    ax.plot(history["eval_accuracy"], linestyle="--", color=line.get_color(), label=f"{label}: validation")
ax.set(xlabel="epoch", ylabel="accuracy", title="1,000 training digits")
ax.legend()
plt.show()
gap = {name: h["train_accuracy"][-1] - h["eval_accuracy"][-1] for name, h in (("without", plain), ("with", l2))}
print(f"gap between training and validation accuracy at the end: {gap['without']:.3f} without L2, "
      f"{gap['with']:.3f} with it")

# %% [markdown]
# The same L2 step can be written as an optimizer instead of a cost: chaining weight decay
# before SGD, `gd.chain(gd.add_decayed_weights(lmbda / n), gd.sgd(eta))`, gives the update
# `w -> (1 - eta lambda / n) w - eta dC/dw`.
#
# ## Early stopping and halving the learning rate
#
# `patience=N` stops when the validation accuracy has not improved for N epochs, and returns the
# parameters of the best epoch (`history.best_epoch`). `eta_halving=N` halves the learning rate
# each time the accuracy has not improved for N epochs and stops once it is 1/128 of its start.

# %%
params, history = run(gd.cross_entropy_cost, "scaled", 0.5, epochs=100, data=small, patience=8)
print(f"stopped after {len(history)} epochs ({history.stop_reason}); best epoch {history.best_epoch}, "
      f"validation accuracy {max(history['eval_accuracy']):.4f}")
print(f"test accuracy of the returned (best) parameters: {gd.accuracy(params, test):.4f}")

# %%
params, history = run(gd.cross_entropy_cost, "scaled", 0.5, epochs=100, data=small, eta_halving=3)
scales = [r["learning_rate_scale"] for r in history.epochs]
fig, ax = plt.subplots(figsize=(7, 3.5))
ax.step(range(1, len(scales) + 1), [0.5 * s for s in scales], where="post")
ax.set(xlabel="epoch", ylabel="learning rate", yscale="log", title="eta halved after 3 epochs without improvement")
plt.show()
print(f"stopped after {len(history)} epochs ({history.stop_reason})")

# %% [markdown]
# The command line has the same tools: `gd-jax train --cost cross-entropy --eta 0.5 --init scaled
# --lmbda 5 --validation --patience 10` (or `--eta-schedule 10`); see the
# [command-line reference](../../reference/cli/).
