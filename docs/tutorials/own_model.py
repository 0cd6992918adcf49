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
# # Your own model
#
# `gd.fit` needs only one function of your model: a pure `cost(params, x, y_onehot)` that
# averages over the batch. `params` may be any pytree of arrays. For accuracies, pass
# `predict_fn(params, x) -> scores` (the answer is the highest score); without it a model that is
# not gd_jax's own MLP still trains, and its accuracies are `None`. The optimizer may be any optax
# transformation. This page trains the same small classifier four ways, each for a few epochs on
# 2,000 digits of the embedded sample, when the site is built.

# %%
import jax
import jax.numpy as jnp
import optax

import gd_jax as gd

train, test = gd.load_mnist("sample")
train, test = train.take(2000), test.take(2000)


def report(name, history):
    print(f"{name}: accuracy on 2,000 test digits per epoch", [round(a, 3) for a in history["eval_accuracy"]])


# %% [markdown]
# ## A plain pytree
#
# A dict of `(w, b)` tuples with its own forward pass (tanh hidden layer, logits out) and optax's
# softmax cross-entropy:


# %%
def forward(params, x):
    (w1, b1), (w2, b2) = params["hidden"], params["out"]
    return jnp.tanh(x @ w1 + b1) @ w2 + b2  # logits


def cost(params, x, y_onehot):  # the batch mean, as every cost here
    return optax.softmax_cross_entropy(forward(params, x), y_onehot).mean()


k1, k2 = jax.random.split(jax.random.key(0))
model = {"hidden": (jax.random.normal(k1, (784, 64)) / 28, jnp.zeros(64)),
         "out": (jax.random.normal(k2, (64, 10)) / 8, jnp.zeros(10))}
model, history = gd.fit(model, train, eval_data=test, epochs=5, batch_size=32, optimizer=optax.sgd(0.1),
                        cost=cost, predict_fn=forward, key=jax.random.key(1))
report("plain pytree, optax.sgd", history)

# %% [markdown]
# ## Any optax optimizer
#
# The same model with Adam; gd_jax's own `gd.sgd` is interchangeable with `optax.sgd`
# (the [first tutorial](../textbook/) checks them bit for bit).

# %%
model = {"hidden": (jax.random.normal(k1, (784, 64)) / 28, jnp.zeros(64)),
         "out": (jax.random.normal(k2, (64, 10)) / 8, jnp.zeros(10))}
model, history = gd.fit(model, train, eval_data=test, epochs=5, batch_size=32, optimizer=optax.adam(1e-3),
                        cost=cost, predict_fn=forward, key=jax.random.key(1))
report("plain pytree, optax.adam", history)

# %% [markdown]
# ## Flax linen
#
# A linen module keeps its parameters outside itself: `model.init` returns them as a pytree, and
# `model.apply` is a pure function of them, exactly what `fit` wants.

# %%
import flax.linen as nn  # noqa: E402


class MLP(nn.Module):
    @nn.compact
    def __call__(self, x):
        x = nn.tanh(nn.Dense(64)(x))
        return nn.Dense(10)(x)


linen_model = MLP()
variables = linen_model.init(jax.random.key(0), train.x[:1])


def linen_logits(params, x):
    return linen_model.apply({"params": params}, x)


def linen_cost(params, x, y_onehot):
    return optax.softmax_cross_entropy(linen_logits(params, x), y_onehot).mean()


params, history = gd.fit(variables["params"], train, eval_data=test, epochs=5, batch_size=32,
                         optimizer=optax.sgd(0.1), cost=linen_cost, predict_fn=linen_logits, key=jax.random.key(1))
report("flax.linen", history)

# %% [markdown]
# ## Flax nnx
#
# An nnx module holds its own state. `nnx.split` separates it into a static graph definition and a
# pytree of arrays; train the arrays, and `nnx.merge` the two back wherever the model is needed.

# %%
from flax import nnx  # noqa: E402


class NnxMLP(nnx.Module):
    def __init__(self, rngs):
        self.hidden = nnx.Linear(784, 64, rngs=rngs)
        self.out = nnx.Linear(64, 10, rngs=rngs)

    def __call__(self, x):
        return self.out(jnp.tanh(self.hidden(x)))


graphdef, state = nnx.split(NnxMLP(nnx.Rngs(0)))


def nnx_logits(state, x):
    return nnx.merge(graphdef, state)(x)


def nnx_cost(state, x, y_onehot):
    return optax.softmax_cross_entropy(nnx_logits(state, x), y_onehot).mean()


state, history = gd.fit(state, train, eval_data=test, epochs=5, batch_size=32, optimizer=optax.sgd(0.1),
                        cost=nnx_cost, predict_fn=nnx_logits, key=jax.random.key(1))
trained = nnx.merge(graphdef, state)  # an ordinary nnx module again
report("flax.nnx", history)

# %% [markdown]
# ## Equinox
#
# An Equinox model is a pytree that mixes arrays with functions and other static fields.
# `eqx.partition` splits off the arrays, which `fit` trains; `eqx.combine` puts the model back
# together inside the cost.
#
# > **To be updated** (`EQUINOX-FIT` marker): support for passing an Equinox module to `gd.fit`
# > directly is being added. Until it lands, this partition/combine form is the way, and it keeps
# > working afterwards.

# %%
import equinox as eqx  # noqa: E402

eqx_model = eqx.nn.MLP(784, 10, width_size=64, depth=1, activation=jnp.tanh, key=jax.random.key(0))
arrays, static = eqx.partition(eqx_model, eqx.is_array)


def eqx_logits(arrays, x):
    return jax.vmap(eqx.combine(arrays, static))(x)  # an eqx.nn.MLP takes one example


def eqx_cost(arrays, x, y_onehot):
    return optax.softmax_cross_entropy(eqx_logits(arrays, x), y_onehot).mean()


arrays, history = gd.fit(arrays, train, eval_data=test, epochs=5, batch_size=32, optimizer=optax.sgd(0.1),
                         cost=eqx_cost, predict_fn=eqx_logits, key=jax.random.key(1))
eqx_model = eqx.combine(arrays, static)
report("equinox", history)

# %% [markdown]
# ## Other neurons for gd_jax's own MLP
#
# gd_jax's MLP takes `activation=` (`sigmoid`, `tanh`, `relu`, `identity`); bind it into a cost
# with `functools.partial` and pass the same name to `fit` for its accuracy:

# %%
import functools  # noqa: E402

params = gd.init_mlp(jax.random.key(0), [784, 64, 10], init="scaled")
params, history = gd.fit(params, train, eval_data=test, epochs=5, batch_size=32, optimizer=gd.sgd(0.1),
                         cost=functools.partial(gd.log_likelihood_cost, activation="relu"), activation="relu",
                         key=jax.random.key(1))
report("gd_jax MLP, relu + softmax log-likelihood", history)
