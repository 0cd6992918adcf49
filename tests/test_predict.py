"""``gd-jax predict``: a trained network on image files (gd_jax._src.images).

Real test digits are written out as image files, as people would hand them over (28x28 as
they are, or inverted, enlarged and off-centre on a larger canvas, as PNG and JPEG); the
predictions from the files are compared with the network's answers on the same digits in
memory. The geometry of the MNIST preparation is checked on drawn shapes with numpy, and
every kind of bad input on hand-made bad files.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import re
import struct
import subprocess
import sys
import types
import zlib
from contextlib import redirect_stderr, redirect_stdout

import jax
import numpy as np
import pytest
from PIL import Image

import gd_jax as gd
from gd_jax._src.images import (
    _check_header,
    find_images,
    load_trained_network,
    predict_images,
    preprocess_digit,
    read_grey_image,
)
from gd_jax.cli.predict import add_predict_arguments, run_predict

N = 200


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory, mnist_sample):
    """A run folder as `gd-jax train` writes it: params.npz and config.json of a trained network."""
    train, _ = mnist_sample
    params = gd.init_mlp(jax.random.key(0), [784, 30, 10])
    params, _ = gd.fit(params, train, epochs=4, batch_size=10, optimizer=gd.sgd(3.0), cost=gd.quadratic_cost,
                       key=jax.random.key(1))
    folder = tmp_path_factory.mktemp("run")
    gd.save_params(folder / "params.npz", params)
    (folder / "config.json").write_text(json.dumps({"sizes": [784, 30, 10], "activation": "sigmoid"}))
    return folder


@pytest.fixture(scope="module")
def digits(mnist_sample, run_dir):
    """N test digits as uint8 28x28 images, and the network's activations for them in memory."""
    _, test = mnist_sample
    images = np.round(np.asarray(test.x[:N]) * 255).astype(np.uint8).reshape(N, 28, 28)
    params = load_trained_network(run_dir).params
    return images, np.asarray(gd.predict(params, images.reshape(N, -1).astype(np.float32) / 255))


def write_all(folder, images, transform, suffix=".png") -> list[str]:
    folder.mkdir(exist_ok=True)
    paths = []
    for i, image in enumerate(images):
        path = str(folder / f"{i}{suffix}")
        transform(i, image).save(path, **({"quality": 90} if suffix == ".jpg" else {}))
        paths.append(path)
    return paths


@pytest.mark.parametrize("invert", [False, True], ids=["light on dark", "dark on light"])
def test_test_digits_as_28x28_pngs_give_the_in_memory_activations(tmp_path, run_dir, digits, invert):
    images, in_memory = digits
    paths = write_all(tmp_path / "png", images, lambda i, im: Image.fromarray(255 - im if invert else im))
    net = load_trained_network(run_dir)
    result = predict_images(net.params, paths, activation=net.activation)
    np.testing.assert_allclose(result.activations, in_memory, rtol=1e-6, atol=1e-7)
    np.testing.assert_array_equal(result.digits, in_memory.argmax(axis=1))
    np.testing.assert_array_equal(result.inputs, images.reshape(N, -1) / np.float32(255))


def _enlarged_off_centre(seed):
    rng = np.random.default_rng(seed)

    def make(i, image):
        big = Image.fromarray(255 - image).resize((84, 84), Image.Resampling.BILINEAR)  # dark ink, 3x the size
        canvas = Image.new("L", (160, 130), 255)
        canvas.paste(big, (int(rng.integers(0, 70)), int(rng.integers(0, 40))))
        return canvas

    return make


@pytest.mark.parametrize("suffix", [".png", ".jpg"])
def test_enlarged_inverted_off_centre_digits_are_brought_back_to_mnist_form(tmp_path, run_dir, digits, suffix):
    images, in_memory = digits
    paths = write_all(tmp_path / "big", images, _enlarged_off_centre(0), suffix)
    net = load_trained_network(run_dir)
    result = predict_images(net.params, paths, activation=net.activation)
    # Resampled twice (up here, down in preprocessing), so not bit-identical: but the same digit in the
    # same place. Measured: 97% the same answers, mean correlation 0.95 with the original pixels.
    agreement = np.mean(result.digits == in_memory.argmax(axis=1))
    correlation = np.mean([np.corrcoef(a, b)[0, 1] for a, b in zip(result.inputs, images.reshape(N, -1))])
    assert agreement >= 0.93 and correlation >= 0.9, (agreement, correlation)


def test_preparation_crops_fits_20x20_keeping_aspect_and_centres_the_mass():
    # A dark bar 120 tall and 30 wide, high and to the right on a light 400x300 canvas.
    canvas = np.full((400, 300), 230, np.uint8)
    canvas[20:140, 250:280] = 10
    x = preprocess_digit(canvas).reshape(28, 28)
    ink_rows, ink_cols = np.flatnonzero(x.any(axis=1) > 0), np.flatnonzero(x.any(axis=0) > 0)
    assert len(ink_rows) == 20 and len(ink_cols) == 5  # 120:30 kept as 20:5
    assert x.max() == pytest.approx(1.0, abs=0.02) and x[0, 0] == 0.0  # light ink on black
    rows, cols = np.indices(x.shape)
    assert abs((x * rows).sum() / x.sum() - 14) <= 0.5 and abs((x * cols).sum() / x.sum() - 14) <= 0.5
    # The same shape as strokes on a transparent background (opacity is the ink) comes out the same.
    rgba = np.zeros((400, 300, 4), np.uint8)
    rgba[20:140, 250:280] = (0, 0, 255, 255)
    np.testing.assert_allclose(preprocess_digit(rgba), x.reshape(-1), atol=1e-6)


def test_rgba_file_with_transparency_is_read_as_its_opacity(tmp_path):
    rgba = np.zeros((50, 40, 4), np.uint8)
    rgba[10:30, 5:15, 3] = 255
    Image.fromarray(rgba).save(tmp_path / "strokes.png")
    grey = read_grey_image(tmp_path / "strokes.png")
    assert grey.shape == (50, 40) and grey[20, 10] == 0.0 and grey[0, 0] == 1.0


def _save(path, make) -> str:
    make(str(path))
    return str(path)


BAD_FILES = {
    "missing": (lambda p: str(p / "nope.png"), FileNotFoundError, r"image not found: .*nope\.png"),
    "text named .png": (lambda p: _save(p / "notes.png", lambda f: open(f, "w").write("not an image")), ValueError,
                        r"cannot read .*notes\.png' as an image: it is text; pass a PNG or JPEG file"),
    "truncated png": (lambda p: _save(p / "cut.png", lambda f: _truncated_png(f)), ValueError,
                      r"cut\.png' is damaged or incomplete"),
    "blank white": (lambda p: _save(p / "white.png", lambda f: Image.new("L", (60, 60), 255).save(f)), ValueError,
                    r"white\.png' shows no digit: all its pixels are within 10% of the background"),
    "faint noise": (lambda p: _save(p / "grey.png", lambda f: Image.fromarray(
        np.random.default_rng(0).integers(120, 135, (60, 60)).astype(np.uint8)).save(f)), ValueError,
                    r"shows no digit"),
    "a folder": (lambda p: str(p), ValueError, r"is a folder, not an image; pass the image files in it"),
    "a flipped byte in the image data": (lambda p: _save(p / "flipped.png", _flipped_png), ValueError,
                                         r"flipped\.png' is damaged or incomplete \(.*bad header checksum in b'IDAT'"),
    "empty": (lambda p: _save(p / "empty.png", lambda f: open(f, "wb").close()), ValueError,
              r"empty\.png' is empty \(0 bytes\)"),
    "20000x20000": (lambda p: _save(p / "huge.png", lambda f: _png_header(f, 20000, 20000)), ValueError,
                    r"huge\.png' is too large to read safely \(400,000,000 pixels, more than Pillow's "
                    r"decompression-bomb limit and the 67,108,864 \(2\*\*26\)"),
    "over 2**26 pixels": (lambda p: _save(p / "big.png", lambda f: _png_header(f, 9000, 9000)), ValueError,
                          r"big\.png' is 9000x9000 = 81,000,000 pixels, more than the 67,108,864 \(2\*\*26\)"),
    "zero width": (lambda p: _save(p / "zero.png", lambda f: _png_header(f, 0, 10)), ValueError,
                   r"cannot read .*zero\.png' as an image: it starts as an image \(PNG\) but its header cannot"),
    "animated GIF": (lambda p: _save(p / "anim.gif", lambda f: _frames(f)), ValueError,
                     r"anim\.gif' has 3 frames \(an animation or several pages\); pass a single still image"),
    "animated PNG": (lambda p: _save(p / "anim.png", lambda f: _frames(f)), ValueError, r"anim\.png' has 3 frames"),
    "multi-page TIFF": (lambda p: _save(p / "pages.tif", lambda f: _frames(f)), ValueError,
                        r"pages\.tif' has 3 frames"),
    "a params file": (lambda p: _save(p / "params.png", lambda f: np.savez(open(f, "wb"), x=np.zeros(2))),
                      ValueError, r"params\.png' as an image: it is a zip archive \(such as a params\.npz\)"),
    "not a regular file": (lambda p: "/dev/null", ValueError, r"'/dev/null' is not a regular file"),
}


def _png_header(path: str, width: int, height: int) -> None:
    """A PNG of any declared size in a few bytes: its header and a token of image data."""
    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    with open(path, "wb") as f:
        f.write(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\x00" * 10))
                + chunk(b"IEND", b""))


def _frames(path: str) -> None:
    frames = [Image.fromarray(np.roll(np.eye(28, dtype=np.uint8) * 255, k, axis=1)) for k in range(3)]
    frames[0].save(path, save_all=True, append_images=frames[1:], duration=100)


def _flipped_png(path: str) -> None:
    """A digit's PNG with one bit flipped in its IDAT data, where Pillow's lazy decoding still accepts it."""
    buffer = io.BytesIO()
    Image.fromarray(np.eye(28, dtype=np.uint8) * 255).save(buffer, format="PNG")
    data = buffer.getvalue()
    start = data.index(b"IDAT") + 4
    length = struct.unpack(">I", data[start - 8:start - 4])[0]
    for k in range(length):
        flipped = bytearray(data)
        flipped[start + k] ^= 0x01
        try:
            Image.open(io.BytesIO(bytes(flipped))).convert("L")  # what open-and-convert alone accepts
        except Exception:
            continue
        with open(path, "wb") as f:
            f.write(bytes(flipped))
        return
    raise AssertionError("no single flipped bit that Pillow's lazy decoding accepts")


def _truncated_png(path: str) -> None:
    buffer = io.BytesIO()
    Image.fromarray(np.eye(40, dtype=np.uint8) * 255).save(buffer, format="PNG")
    with open(path, "wb") as f:
        f.write(buffer.getvalue()[:60])


@pytest.mark.parametrize("case", list(BAD_FILES))
def test_bad_image_files_get_one_clear_line(tmp_path, run_dir, case):
    make, error, message = BAD_FILES[case]
    path = make(tmp_path)
    net = load_trained_network(run_dir)
    with pytest.raises(error, match=message) as e:
        predict_images(net.params, [path])
    assert "\n" not in str(e.value)


def test_mode_none_needs_28x28_and_modes_are_checked(run_dir):
    with pytest.raises(ValueError, match=r"is 40x30 pixels; mode 'none' needs 28x28"):
        preprocess_digit(np.eye(40, 30), mode="none")
    with pytest.raises(ValueError, match=r"unknown preprocessing mode 'fancy'; choose one of auto, mnist, none"):
        preprocess_digit(np.eye(28), mode="fancy")
    with pytest.raises(ValueError, match=r"no images given"):
        predict_images(load_trained_network(run_dir).params, [])


def test_wrong_run_folders_get_one_clear_line(tmp_path, run_dir):
    with pytest.raises(FileNotFoundError, match=r"run folder not found: .*nowhere"):
        load_trained_network(tmp_path / "nowhere")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match=r"empty' is not a gd-jax run folder \(it has no params\.npz\)"):
        load_trained_network(tmp_path / "empty")
    (tmp_path / "damaged").mkdir()
    (tmp_path / "damaged" / "params.npz").write_bytes(b"PK\x03\x04 not really")
    with pytest.raises(ValueError, match=r"params\.npz' is not a readable params file"):
        load_trained_network(tmp_path / "damaged")
    (tmp_path / "badconfig").mkdir()
    (tmp_path / "badconfig" / "params.npz").write_bytes((run_dir / "params.npz").read_bytes())
    (tmp_path / "badconfig" / "config.json").write_text("{not json")
    with pytest.raises(ValueError, match=r"config\.json' is not readable JSON"):
        load_trained_network(tmp_path / "badconfig")
    small = gd.init_mlp(jax.random.key(0), [100, 10, 10])
    with pytest.raises(ValueError, match=r"the network takes 100 inputs, but images become 28x28 = 784"):
        predict_images(small, [np.eye(28)])


def test_the_run_folders_activation_is_used(tmp_path, run_dir, digits):
    images, _ = digits
    (tmp_path / "params.npz").write_bytes((run_dir / "params.npz").read_bytes())
    (tmp_path / "config.json").write_text(json.dumps({"activation": "tanh"}))
    net = load_trained_network(tmp_path)
    assert net.activation == "tanh" and net.config == {"activation": "tanh"}
    result = predict_images(net.params, list(images[:5]), activation=net.activation)
    want = gd.predict(net.params, images[:5].reshape(5, -1) / np.float32(255), activation="tanh")
    np.testing.assert_allclose(result.activations, want, rtol=1e-6)
    # A params.npz named directly reads the config.json beside it.
    assert load_trained_network(tmp_path / "params.npz").activation == "tanh"


def parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="gd-jax predict")
    return add_predict_arguments(parser).parse_args(argv)


def call(argv: list[str]) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with redirect_stdout(out), redirect_stderr(err):
        status = run_predict(parse(argv))
    return status, out.getvalue(), err.getvalue()


def test_command_prints_each_digit_and_its_activations(tmp_path, run_dir, digits):
    images, in_memory = digits
    paths = write_all(tmp_path / "png", images[:3], lambda i, im: Image.fromarray(im))
    status, out, err = call([str(run_dir), *paths])
    assert status == 0 and err == ""
    lines = out.splitlines()
    assert len(lines) == 3
    for line, path, scores in zip(lines, paths, in_memory):
        fields = line.split()
        assert fields[0] == path and fields[1] == str(scores.argmax()) and fields[2] == "activations"
        assert [float(f.split(":")[1]) for f in fields[3:]] == pytest.approx(scores.tolist(), abs=5e-4)
    status, out, _ = call([str(run_dir), *paths, "--json"])
    report = json.loads(out)
    assert status == 0 and [p["image"] for p in report["predictions"]] == paths
    assert [p["digit"] for p in report["predictions"]] == in_memory[:3].argmax(axis=1).tolist()
    # rtol: a 3-row and a 200-row matrix product round differently in float32.
    np.testing.assert_allclose([p["activations"] for p in report["predictions"]], in_memory[:3], rtol=1e-5)


def test_command_bad_input_is_one_line_on_stderr_and_status_2(tmp_path, run_dir, digits):
    good = write_all(tmp_path / "png", digits[0][:1], lambda i, im: Image.fromarray(im))[0]
    for argv, message in [
        ([str(tmp_path / "nowhere"), good], "run folder not found"),
        ([str(tmp_path / "png"), good], "is not a gd-jax run folder"),
        ([good, str(run_dir)], "is not a params file: it is an image (PNG); pass the params.npz of a run folder "
                               "(what gd-jax train writes, or gd.save_params); the run comes first: gd-jax predict "
                               "RUN IMAGE..."),  # the arguments swapped
    ]:
        status, out, err = call(argv)
        assert status == 2 and out == "", argv  # a wrong network: nothing predicted
        assert err.startswith("gd-jax predict: error: ") and message in err and err.count("\n") == 1


def test_bad_images_get_one_line_each_and_the_good_ones_are_still_predicted(tmp_path, run_dir, digits):
    images, in_memory = digits
    good = write_all(tmp_path / "png", images[:2], lambda i, im: Image.fromarray(im))
    bad = {name: make(tmp_path) for name, (make, _, _) in BAD_FILES.items() if name != "a folder"}
    (tmp_path / "empty folder").mkdir()
    argv = [str(run_dir), good[0], *bad.values(), str(tmp_path / "empty folder"), str(tmp_path / "*.none"), good[1]]
    status, out, err = call(argv)
    assert status == 2
    lines = err.splitlines()
    assert len(lines) == len(bad) + 2 and all(line.startswith("gd-jax predict: error: ") for line in lines)
    for name, line in zip(bad, lines[2:]):
        assert re.search(BAD_FILES[name][2], line), (name, line)
    assert "the folder" in lines[0] and "holds no image files" in lines[0] and "no file matches" in lines[1]
    printed = out.splitlines()
    assert [line.split()[0] for line in printed] == good
    assert [int(line.split()[1]) for line in printed] == in_memory[:2].argmax(axis=1).tolist()
    status, out, err = call([*argv, "--json"])
    report = json.loads(out)
    assert status == 2 and [p["image"] for p in report["predictions"]] == good
    assert [e["image"] for e in report["errors"]] == [None, None, *bad.values()]
    assert [e["error"] for e in report["errors"]] == [line.removeprefix("gd-jax predict: error: ") for line in lines]


def test_folders_and_globs_stand_for_their_images_sorted(tmp_path, run_dir, digits):
    images, _ = digits
    folder = tmp_path / "digits"
    folder.mkdir()
    names = ["b.PNG", "a.png", "c.jpg", "10.png", "2.png"]
    for name, image in zip(names, images):
        Image.fromarray(image).save(folder / name, format="JPEG" if name.endswith(".jpg") else "PNG")
    (folder / "notes.txt").write_text("not a digit")  # not an image suffix: skipped in a folder
    (folder / ".hidden.png").write_bytes(b"")  # hidden: skipped
    (folder / "sub.png").mkdir()  # a folder inside: skipped
    expected = [str(folder / n) for n in sorted(names)]
    status, out, err = call([str(run_dir), str(folder)])  # the folder given as the image is read as a folder
    assert status == 0 and err == ""
    assert [line.split()[0] for line in out.splitlines()] == expected
    status, out, err = call([str(run_dir), str(folder / "*.png"), str(folder / "a.png")])  # a.png once
    assert status == 0 and err == ""
    assert [line.split()[0] for line in out.splitlines()] == [str(folder / n) for n in ("10.png", "2.png", "a.png")]
    paths, problems = find_images([folder, str(tmp_path / "x*"), str(tmp_path / "missing.png")])
    assert paths == [*expected, str(tmp_path / "missing.png")]  # a missing file is reported when it is read
    assert problems == [f"no file matches {str(tmp_path / 'x*')!r}; check the pattern (or quote it so the shell "
                        "leaves it to gd-jax)"]


def test_a_file_name_that_is_not_utf8_is_printed_escaped(tmp_path, run_dir, digits):
    folder = tmp_path / "odd"
    folder.mkdir()
    name = os.fsdecode(b"bad\xffname.png")
    Image.fromarray(digits[0][0]).save(folder / name, format="PNG")
    Image.fromarray(digits[0][1]).save(folder / "\u00fcn\u00efc\u00f6d\u00e9 \u2713.png")
    (folder / os.fsdecode(b"worse\xfe.png")).write_text("text")
    status, out, err = call([str(run_dir), str(folder)])
    assert status == 2 and "worse\\udcfe.png' as an image: it is text" in err  # repr's escape
    assert [line.split()[0] for line in out.splitlines()] == [str(folder / "bad\\xffname.png"),
                                                              str(folder / "\u00fcn\u00efc\u00f6d\u00e9")]
    out.encode("utf-8")  # printable


def test_pillows_decompression_bomb_warning_is_an_error(tmp_path, monkeypatch):
    Image.fromarray(np.eye(28, dtype=np.uint8) * 255).save(tmp_path / "digit.png")
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 500)  # 784 pixels: over the limit, under twice it (a warning)
    with pytest.raises(ValueError, match=r"digit\.png' is too large to read safely \(784 pixels"):
        read_grey_image(tmp_path / "digit.png")


@pytest.mark.parametrize("size", [(0, 5), (5, 0)])
def test_an_image_without_pixels_is_refused(size):
    with pytest.raises(ValueError, match=rf"'x' is {size[0]}x{size[1]} pixels: it has no pixels"):
        _check_header("x", types.SimpleNamespace(size=size))


@pytest.mark.slow
def test_gd_jax_predict_command_in_a_fresh_process(tmp_path, run_dir, digits):
    images, in_memory = digits
    paths = write_all(tmp_path / "png", images[:2], lambda i, im: Image.fromarray(255 - im))
    run = subprocess.run([sys.executable, "-m", "gd_jax", "predict", str(run_dir), *paths, "--json"],
                         capture_output=True, text=True, timeout=120, env=dict(os.environ, JAX_PLATFORMS="cpu"))
    assert run.returncode == 0, run.stderr
    assert [p["digit"] for p in json.loads(run.stdout)["predictions"]] == in_memory[:2].argmax(axis=1).tolist()
