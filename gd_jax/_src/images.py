"""A trained network on a person's own digit images, prepared the way MNIST's digits were.

MNIST's digits were made from scanned handwriting: each was cropped to its ink, scaled to fit
a 20x20 box keeping its aspect ratio (anti-aliased, hence the grey levels), and placed in a
28x28 field so that its centre of mass sits at the centre, light ink on a dark background.
A network trained on them expects exactly that, so ``preprocess_digit`` does the same to any
image (PNG, JPEG, any size, dark-on-light or light-on-dark):

1. grey levels in [0, 1] (a transparent background: the opacity is the ink);
2. polarity from the border: when its median is light, the image is inverted;
3. background level removed (the border's median) and the ink scaled to peak at 1; faint
   noise below ``NOISE_FLOOR`` of the peak dropped;
4. cropped to the ink's bounding box, scaled to fit 20x20 (Lanczos, anti-aliased);
5. pasted into 28x28 with its centre of mass at pixel (14, 14), as in MNIST (measured
   on the official test set: mean centre of mass 13.99, 14.01).

A 28x28 image is taken to be in MNIST's form already (``mode="auto"``): only its polarity is
fixed, so a test digit written out as a PNG gives back exactly the activations it gives in
memory. ``mode="mnist"`` runs every step on any image, ``mode="none"`` none of the geometric ones.

Pillow is imported only when a file is read. (The module is not called ``predict``: a
submodule of that name would replace the function ``gd.predict`` on the package once imported.)
"""

from __future__ import annotations

import glob
import json
import os
import re
import struct
import warnings
import zlib
from collections.abc import Callable, Mapping, Sequence
from typing import Any, NamedTuple

import jax.numpy as jnp
import numpy as np

from gd_jax._src.analysis import PredictFn, output_activations
from gd_jax._src.extras import require
from gd_jax._src.network import Params, layer_sizes
from gd_jax._src.serialization import describe_file, load_params, read_json_object
from gd_jax._src.sweep_folder import describe_models, is_sweep_folder, load_sweep, pick_model

__all__ = [
    "IMAGE_SUFFIXES",
    "MAX_PIXELS",
    "MODES",
    "ImagePredictions",
    "TrainedNetwork",
    "find_images",
    "load_trained_network",
    "predict_images",
    "preprocess_digit",
    "read_grey_image",
]

MODES = ("auto", "mnist", "none")
SIDE = 28  # MNIST's field
BOX = 20  # the box each digit was scaled to fit
CENTRE = 14.0  # where MNIST's centres of mass sit (row, column)
NOISE_FLOOR = 0.1  # ink below this fraction of the peak is background noise
MIN_CONTRAST = 0.1  # a digit's ink must differ from the background by this much of the full scale
# The most pixels an image file may have (2**26: 8192x8192): a digit needs far fewer, and a
# larger file is more likely a mistake or a decompression bomb than a digit.
MAX_PIXELS = 2**26
# What a folder given as an image is searched for (the case of the suffix does not matter).
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".gif", ".bmp", ".tif", ".tiff", ".webp")
_GLOB = re.compile(r"[*?[]")
# ITU-R 601 luma weights, as Pillow's "L" conversion uses.
_LUMA = np.array([0.299, 0.587, 0.114])


class TrainedNetwork(NamedTuple):
    """A run folder's network: its parameters, neurons and saved settings."""

    params: Params
    activation: str
    config: dict[str, Any]


class ImagePredictions(NamedTuple):
    """What the network says about each image.

    Attributes:
      digits: int ``(n,)``, the output neuron with the highest activation.
      activations: float ``(n, n_classes)``, the output activations.
      inputs: float32 ``(n, 784)``, the images as the network saw them (MNIST form, flattened).
    """

    digits: np.ndarray
    activations: np.ndarray
    inputs: np.ndarray


def read_grey_image(source: str | os.PathLike | np.ndarray) -> np.ndarray:
    """An image file or array as grey levels in [0, 1], ``(rows, cols)`` float64, 1 = white.

    Files are read with Pillow (PNG, JPEG and whatever else it reads), turned upright by
    their EXIF orientation. An image with transparency is read as its opacity, inverted
    (opaque strokes on a transparent background become dark ink on white). Arrays may be
    ``(rows, cols)``, ``(rows, cols, 3)`` RGB or ``(rows, cols, 4)`` RGBA; integers are
    taken as 0-255, floats as 0-1.

    Raises:
      FileNotFoundError: no such file.
      ValueError: not an image, or an array of another shape.
    """
    if isinstance(source, (str, os.PathLike)):
        array = _read_file(os.fspath(source))
        name = repr(os.fspath(source))
    else:
        array = np.asarray(source)
        name = f"an array of shape {array.shape}"
    if np.issubdtype(array.dtype, np.integer) or array.dtype == bool:
        array = array.astype(np.float64) / (1.0 if array.dtype == bool else 255.0)
    elif np.issubdtype(array.dtype, np.floating):
        array = array.astype(np.float64)
    else:
        raise ValueError(f"{name} holds {array.dtype} values; pass grey levels as integers 0-255 or floats 0-1")
    if array.ndim == 3 and array.shape[2] in (3, 4):
        if array.shape[2] == 4 and array[..., 3].min() < 1.0:
            return 1.0 - array[..., 3]  # drawn strokes on a transparent background: opacity is the ink
        array = array[..., :3] @ _LUMA
    if array.ndim != 2 or min(array.shape) == 0:
        raise ValueError(f"{name} is not a 2-D grey or RGB(A) image; pass (rows, cols) or (rows, cols, 3 or 4)")
    if not np.isfinite(array).all():
        raise ValueError(f"{name} holds NaN or infinite values; pass grey levels in [0, 1]")
    return np.clip(array, 0.0, 1.0)


def _read_file(path: str) -> np.ndarray:
    """The pixels of an image file, decoded fully and verified, as an array (``L`` or ``RGBA``).

    Refused with one line naming the file and why: missing, a folder, not a regular file,
    unreadable, empty, not an image (with what it is), damaged (bad checksums, truncated
    data), animated or multi-page, zero-size, more than ``MAX_PIXELS`` pixels, or what
    Pillow takes for a decompression bomb.
    """
    require("PIL", purpose="image files")
    from PIL import Image, ImageOps, UnidentifiedImageError

    if os.path.isdir(path):
        raise ValueError(f"{path!r} is a folder, not an image; pass the image files in it (gd-jax predict reads "
                         "every image of a folder given as an argument)")
    if not os.path.exists(path):
        raise FileNotFoundError(f"image not found: {path!r}; pass the path of a PNG or JPEG file")
    if not os.path.isfile(path):  # a device, a FIFO (which could block a read forever), a socket
        raise ValueError(f"{path!r} is not a regular file; pass the path of a PNG or JPEG file")
    try:
        with open(path, "rb") as f:
            empty = not f.read(1)
    except OSError as e:
        raise ValueError(f"cannot read {path!r} ({e.strerror or e}); check its permissions") from None
    if empty:
        raise ValueError(f"{path!r} is empty (0 bytes); pass a PNG or JPEG file")

    def damaged(e: BaseException) -> ValueError:
        reason = " ".join(str(e).split()) or type(e).__name__
        return ValueError(f"{path!r} is damaged or incomplete ({reason}); pass an intact PNG or JPEG file")

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)  # refused, not merely warned of
            with Image.open(path) as header:  # reads the header only
                _check_header(path, header)
                header.verify()  # every chunk's checksum (PNG), the whole structure; leaves the image unusable
            with Image.open(path) as opened:  # verify() spends its image: a fresh one, decoded fully
                opened.load()
                image = ImageOps.exif_transpose(opened)
                if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
                    return np.asarray(image.convert("RGBA"))
                if image.mode.startswith(("I", "F")):  # 16- or 32-bit integer or float grey
                    return _wide_grey(np.asarray(image))
                return np.asarray(image.convert("L"))
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
        size = re.search(r"\((\d+) pixels\)", str(e))
        pixels = f"{int(size[1]):,} pixels, " if size else ""
        raise ValueError(f"{path!r} is too large to read safely ({pixels}more than Pillow's decompression-bomb limit "
                         f"and the {MAX_PIXELS:,} (2**26) an image may have here); scale it down (a digit needs a few "
                         "hundred pixels a side)") from None
    except UnidentifiedImageError:
        kind = describe_file(path)
        if kind is None:
            what = ": it is a zip archive (such as a params.npz)"
        elif kind.startswith("an image"):
            what = (f": it starts as {kind} but its header cannot be decoded (damaged, zero-size, or a variant "
                    "Pillow does not read)")
        else:
            what = f": it is {kind}"
        raise ValueError(f"cannot read {path!r} as an image{what}; pass a PNG or JPEG file") from None
    except (OSError, SyntaxError, ValueError, EOFError, struct.error, zlib.error, IndexError, TypeError) as e:
        if isinstance(e, ValueError) and str(e).startswith(repr(path)):
            raise  # ours, from _check_header
        raise damaged(e) from None


def _check_header(path: str, image: Any) -> None:
    """Refuses an opened image by what its header says: zero-size, too many pixels, several frames."""
    width, height = image.size
    if width <= 0 or height <= 0:
        raise ValueError(f"{path!r} is {width}x{height} pixels: it has no pixels; pass an image of a digit")
    if width * height > MAX_PIXELS:
        raise ValueError(f"{path!r} is {width}x{height} = {width * height:,} pixels, more than the {MAX_PIXELS:,} "
                         "(2**26) an image may have here; scale it down (a digit needs a few hundred pixels a side)")
    frames = getattr(image, "n_frames", 1)
    if frames > 1:
        raise ValueError(f"{path!r} has {frames} frames (an animation or several pages); pass a single still image "
                         "of one digit")


def _wide_grey(array: np.ndarray) -> np.ndarray:
    """A 16-bit, 32-bit integer or float grey image as floats in [0, 1] (integers by their type's range)."""
    if np.issubdtype(array.dtype, np.integer):
        wide = array.dtype.itemsize > 2 and array.max(initial=0) > 65535  # 32-bit values beyond 16 bits
        top = float(np.iinfo(array.dtype).max) if wide else 65535.0
        return np.clip(array.astype(np.float64) / top, 0.0, 1.0)
    return array.astype(np.float64)


def _resize(ink: np.ndarray, rows: int, cols: int) -> np.ndarray:
    from PIL import Image

    if ink.shape == (rows, cols):
        return ink
    image = Image.fromarray(ink.astype(np.float32))  # mode "F": 32-bit float pixels
    return np.clip(np.asarray(image.resize((cols, rows), Image.Resampling.LANCZOS), np.float64), 0.0, 1.0)


def preprocess_digit(image: str | os.PathLike | np.ndarray, *, mode: str = "auto") -> np.ndarray:
    """One image in MNIST's form: float32 ``(784,)``, light ink (1) on a dark background (0).

    Args:
      image: a file (PNG, JPEG, ...) or an array (see ``read_grey_image``).
      mode: ``"auto"`` (28x28 images as they are, others the MNIST steps), ``"mnist"`` (the
        steps in the module docstring for every image) or ``"none"`` (only the polarity; the
        image must be 28x28).

    Raises:
      ValueError: an unknown mode, an unreadable file, an image with no visible ink, or a
        non-28x28 image with ``mode="none"``.
      FileNotFoundError: no such file.
    """
    if mode not in MODES:
        raise ValueError(f"unknown preprocessing mode {mode!r}; choose one of {', '.join(MODES)}")
    name = repr(os.fspath(image)) if isinstance(image, (str, os.PathLike)) else "the image"
    grey = read_grey_image(image)
    border = np.concatenate([grey[0], grey[-1], grey[1:-1, 0], grey[1:-1, -1]])
    background = float(np.median(border))
    ink = 1.0 - grey if background > 0.5 else grey  # MNIST: light ink on dark
    background = min(background, 1.0 - background)
    peak = float(ink.max())
    if peak - background < MIN_CONTRAST:
        raise ValueError(
            f"{name} shows no digit: all its pixels are within {MIN_CONTRAST:.0%} of the background's grey "
            f"level; pass an image with a visible digit"
        )
    as_is = mode == "none" or (mode == "auto" and grey.shape == (SIDE, SIDE))
    if as_is:
        if grey.shape != (SIDE, SIDE):
            raise ValueError(f"{name} is {grey.shape[0]}x{grey.shape[1]} pixels; mode 'none' needs 28x28 "
                             "(use mode 'mnist' to scale and centre it)")
        return ink.astype(np.float32).reshape(-1)
    ink = np.clip((ink - background) / (peak - background), 0.0, 1.0)
    ink[ink < NOISE_FLOOR] = 0.0
    rows, cols = np.flatnonzero(ink.any(axis=1)), np.flatnonzero(ink.any(axis=0))
    ink = ink[rows[0]:rows[-1] + 1, cols[0]:cols[-1] + 1]
    scale = BOX / max(ink.shape)
    digit = _resize(ink, max(1, round(ink.shape[0] * scale)), max(1, round(ink.shape[1] * scale)))
    mass = digit.sum()
    centre_row = (digit.sum(axis=1) @ np.arange(digit.shape[0])) / mass
    centre_col = (digit.sum(axis=0) @ np.arange(digit.shape[1])) / mass
    top = int(np.clip(round(CENTRE - centre_row), 0, SIDE - digit.shape[0]))
    left = int(np.clip(round(CENTRE - centre_col), 0, SIDE - digit.shape[1]))
    field = np.zeros((SIDE, SIDE))
    field[top:top + digit.shape[0], left:left + digit.shape[1]] = digit
    return field.astype(np.float32).reshape(-1)


def find_images(arguments: Sequence[str | os.PathLike]) -> tuple[list[str], list[str]]:
    """The image files that command-line arguments name: files, folders and glob patterns.

    A file is taken as it is (whether it exists is found out when it is read); a folder
    stands for every image file directly inside it (by ``IMAGE_SUFFIXES``, any case; hidden
    files skipped), sorted by name; a pattern with ``*``, ``?`` or ``[`` that names no file
    itself stands for the files it matches, sorted (folders among them are left out). A
    file named twice is taken once.

    Returns:
      ``(paths, problems)``: the files to read, and one line for each argument that stands
      for no file (an empty folder, an unreadable one, a pattern without matches).
    """
    paths: list[str] = []
    problems: list[str] = []

    def add(argument: str) -> None:
        if os.path.isdir(argument):
            try:
                names = sorted(os.listdir(argument))
            except OSError as e:
                problems.append(f"cannot list the folder {argument!r} ({e.strerror or e}); check its permissions")
                return
            inside = [os.path.join(argument, n) for n in names
                      if not n.startswith(".") and n.lower().endswith(IMAGE_SUFFIXES)
                      and os.path.isfile(os.path.join(argument, n))]
            if not inside:
                problems.append(f"the folder {argument!r} holds no image files ({', '.join(IMAGE_SUFFIXES)}); pass a "
                                "folder of PNG or JPEG digits, or the files themselves")
            paths.extend(inside)
        elif os.path.lexists(argument) or not _GLOB.search(argument):
            paths.append(argument)
        else:
            matches = [match for match in sorted(glob.glob(argument)) if not os.path.isdir(match)]
            if not matches:
                problems.append(f"no file matches {argument!r}; check the pattern (or quote it so the shell leaves it "
                                "to gd-jax)")
            paths.extend(matches)

    for argument in arguments:
        add(os.fspath(argument))
    return list(dict.fromkeys(paths)), problems


def predict_images(
    params: Params,
    images: Sequence[str | os.PathLike | np.ndarray],
    *,
    activation: str = "sigmoid",
    mode: str = "auto",
    predict_fn: PredictFn | None = None,
    on_error: Callable[[int, Exception], None] | None = None,
) -> ImagePredictions:
    """The network's digit for each image, after ``preprocess_digit``.

    Every image is read and prepared before the network runs, so that without ``on_error``
    a bad one stops the call before any result.

    Args:
      params: a network taking 784 inputs (e.g. ``load_trained_network(run).params``).
      images: files or arrays.
      activation: the neurons' non-linearity.
      mode: see ``preprocess_digit``.
      predict_fn: ``predict_fn(params, x) -> scores`` for a model other than gd_jax's MLP.
      on_error: ``on_error(index, error)`` for each image that cannot be read or shows no
        digit (a ``ValueError`` or ``FileNotFoundError`` naming the file and why); that image
        is then left out and the result holds the others, in order. Without it the first
        bad image raises.

    Examples:
      For a run folder: ``net = gd.load_trained_network("runs/textbook")``, then
      ``gd.predict_images(net.params, ["seven.png"], activation=net.activation).digits``. With arrays
      (28x28 images are taken to be in MNIST's form already):

      >>> _, test = gd.load_mnist("sample")
      >>> params = gd.init_mlp(jax.random.key(0), [784, 30, 10])
      >>> result = gd.predict_images(params, list(test.x[:3].reshape(3, 28, 28)))
      >>> result.digits.shape, result.activations.shape, result.inputs.shape
      ((3,), (3, 10), (3, 784))
    """
    if isinstance(images, (str, os.PathLike, np.ndarray)):
        images = [images]
    if not len(images):
        raise ValueError("no images given; pass one or more PNG or JPEG files")
    if predict_fn is None and layer_sizes(params)[0] != SIDE * SIDE:
        raise ValueError(f"the network takes {layer_sizes(params)[0]} inputs, but images become {SIDE}x{SIDE} = "
                         f"{SIDE * SIDE}; use a network trained on MNIST-shaped digits")
    if mode not in MODES:
        raise ValueError(f"unknown preprocessing mode {mode!r}; choose one of {', '.join(MODES)}")
    prepared = []
    for i, image in enumerate(images):
        try:
            prepared.append(preprocess_digit(image, mode=mode))
        except (ValueError, FileNotFoundError) as e:
            if on_error is None:
                raise
            on_error(i, e)
    inputs = np.stack(prepared) if prepared else np.zeros((0, SIDE * SIDE), np.float32)
    activations = output_activations(params, jnp.asarray(inputs), activation=activation, predict_fn=predict_fn)
    return ImagePredictions(activations.argmax(axis=-1), activations, inputs)


def load_trained_network(run: str | os.PathLike, *, model: int | str | Mapping[str, Any] | None = None,
                         ) -> TrainedNetwork:
    """A network from a ``gd-jax train`` run folder (its ``params.npz`` and ``config.json``), or one
    model of a ``gd-jax sweep`` folder.

    Args:
      run: the run folder, or a ``params.npz`` file itself (then with sigmoid neurons, the
        default, unless a ``config.json`` lies beside it), or a sweep folder.
      model: with a sweep folder, which of its models: an index, or its coordinates
        (``"learning_rate=3,seed=1"`` or a dict; see ``gd_jax.load_sweep`` and ``SweepResult.select``).

    Raises:
      FileNotFoundError: no such folder or file.
      ValueError: the folder holds no ``params.npz`` (not a run folder), or a damaged one or
        config; a sweep folder without ``model`` (the message lists its models), or ``model``
        with a run folder.
    """
    path = os.fspath(run)
    if is_sweep_folder(path):
        return _sweep_model(path, model)
    if model is not None:
        raise ValueError(f"{path!r} is a run folder of one network, not a sweep folder; leave out the model")
    if os.path.isdir(path):
        folder, params_path = path, os.path.join(path, "params.npz")
        if not os.path.isfile(params_path):
            raise ValueError(f"{path!r} is not a gd-jax run folder (it has no params.npz); pass the folder "
                             "`gd-jax train` wrote (e.g. runs/<date-time>) or a params.npz file")
    elif os.path.isfile(path):
        folder, params_path = os.path.dirname(path) or ".", path
    else:
        raise FileNotFoundError(f"run folder not found: {path!r}; pass the folder `gd-jax train` wrote")
    config: dict[str, Any] = {}
    config_path = os.path.join(folder, "config.json")
    if os.path.isfile(config_path):
        config = read_json_object(config_path, fix="the run folder is damaged: train it again")
    params = load_params(params_path)
    return TrainedNetwork(params, str(config.get("activation", "sigmoid")), config)


def _sweep_model(path: str, model: int | str | Mapping[str, Any] | None) -> TrainedNetwork:
    result = load_sweep(path)
    if model is None:
        raise ValueError(f"{path!r} is a sweep folder of {len(result)} models; choose one with --model K (an index) "
                         f"or --model learning_rate=3,seed=1: {describe_models(result)}")
    index = pick_model(result, model)
    try:
        with open(os.path.join(path, "config.json")) as f:
            config = json.load(f)
    except (OSError, ValueError):
        config = {}
    config = {**config, **result.coords(index), "model": index}
    return TrainedNetwork(result.model_params(index), str(config.get("activation", "sigmoid")), config)
