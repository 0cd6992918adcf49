"""Data: the Dataset type, IDX files and MNIST from its three sources."""

from gd_jax._src.data.dataset import Dataset, check_dataset
from gd_jax._src.data.idx import read_idx, write_idx
from gd_jax._src.data.mnist import load_mnist

__all__ = ["Dataset", "check_dataset", "load_mnist", "read_idx", "write_idx"]
