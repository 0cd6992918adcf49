"""The core install: gd_jax with only jax, jaxlib, numpy and optax imports and trains.

Run by .ci/run in a venv holding nothing else (``pip install --no-deps -e .``). It trains the
textbook network on the embedded sample for two epochs and checks that no optional dependency
was needed, and that the command line, which needs the ``cli`` extra, says so in one line.
"""

import importlib.util
import subprocess
import sys

import jax

import gd_jax as gd

OPTIONAL = ("matplotlib", "PIL", "tensorboard", "tqdm", "tensorflow_datasets")
present = [m for m in OPTIONAL if importlib.util.find_spec(m) is not None]
assert not present, f"this venv should hold the core only, but has {present}"

train, test = gd.load_mnist("sample")
params = gd.init_mlp(jax.random.key(0), [784, 30, 10])
params, history = gd.fit(params, train, eval_data=test, epochs=2, batch_size=10, optimizer=gd.sgd(3.0),
                         cost=gd.quadratic_cost, key=jax.random.key(1))
accuracy = gd.accuracy(params, test)
assert accuracy > 0.5, accuracy
loaded = sorted(m for m in sys.modules if m.split(".")[0] in OPTIONAL or m.startswith("gd_jax.cli"))
assert not loaded, f"training loaded {loaded}"

done = subprocess.run([sys.executable, "-m", "gd_jax", "train", "--epochs", "1", "--out", "/nonexistent/core-check"],
                      capture_output=True, text=True, timeout=300)
lines = done.stderr.strip().splitlines()
assert done.returncode == 2 and len(lines) == 1 and "pip install 'gd-jax[" in lines[0], (done.returncode, done.stderr)
print(f"core: gd.fit trained 2 epochs to test accuracy {accuracy:.4f} with jax, jaxlib, numpy and optax alone; "
      f"gd-jax says: {lines[0]}")
