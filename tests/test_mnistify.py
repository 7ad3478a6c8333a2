"""digits.mnistify: each MNIST-style step on tiny arrays, errors, and robustness on real MNIST digits."""

import numpy as np
import pytest
from helpers import encode, png
from PIL import Image, PngImagePlugin

from digits import DigitsError
from digits.idx import read_idx
from digits.mnistify import (
    BadInput,
    EmptyInput,
    as_served,
    center_of_mass,
    crop_to_ink,
    decode_image,
    fit_box,
    ink_on_black,
    mnistify,
    open_image,
    paste_centered,
    pixels_to_array,
    prepare_pixels,
)
from digits.shapes import SIDE


def bar(shape=(60, 40), box=(10, 30, 15, 25), value=1.0) -> np.ndarray:
    """Black picture with one bright rectangle rows box[0]:box[1], cols box[2]:box[3]."""
    x = np.zeros(shape, np.float32)
    x[box[0] : box[1], box[2] : box[3]] = value
    return x


@pytest.fixture(scope="module")
def mnist_test(tiny_mnist_dir):
    images = read_idx(tiny_mnist_dir / "t10k-images-idx3-ubyte.gz").astype(np.float32) / 255
    return images, read_idx(tiny_mnist_dir / "t10k-labels-idx1-ubyte.gz")


# --- decoding -----------------------------------------------------------------------------------------


def test_decode_grayscale_png_round_trips():
    x = (np.arange(64 * 32) % 256).astype(np.uint8).reshape(64, 32)
    gray = decode_image(png(x))
    assert gray.dtype == np.float32 and gray.shape == (64, 32)
    np.testing.assert_allclose(gray, x / 255, atol=1e-6)


def test_decode_color_and_jpeg():
    rgb = np.zeros((30, 30, 3), np.uint8)
    rgb[5:25, 12:18] = 255
    assert decode_image(png(rgb))[15, 15] == pytest.approx(1.0)
    assert decode_image(png(rgb, fmt="JPEG"))[15, 15] > 0.9


def test_decode_sixteen_bit_png():
    x = np.zeros((20, 20), np.uint16)
    x[5:15, 8:12] = 65535
    gray = decode_image(png(x))
    assert gray.max() == pytest.approx(1.0) and gray.min() == 0


def test_decode_applies_exif_orientation():
    # Phones store photos sideways plus an EXIF "rotate me" tag; the digit must come out upright.
    exif = Image.Exif()
    exif[0x0112] = 6  # Orientation: rotate 90 degrees clockwise to display
    assert decode_image(encode(Image.new("L", (40, 20), 255), "JPEG", exif=exif)).shape == (40, 20)


@pytest.mark.parametrize(("ink", "background"), [(255, 0.0), (0, 1.0)])
def test_transparent_background_goes_behind_the_ink_in_contrast(ink, background):
    # A canvas stroke on a transparent background: white ink goes on black, black ink on white.
    rgba = np.zeros((40, 40, 4), np.uint8)
    rgba[..., :3] = ink
    rgba[10:30, 18:22, 3] = 255
    gray = decode_image(png(rgba))
    assert gray[0, 0] == background and gray[20, 20] == ink / 255


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"hello, not an image", "not an image"),
        (b"", "not an image"),
        (png(np.zeros((50, 50), np.uint8))[:60], "damaged image"),  # truncated in the pixel data
    ],
)
def test_decode_rejects_non_images(data, message):
    with pytest.raises(BadInput, match=message):
        decode_image(data)


@pytest.mark.parametrize("fmt", ["EPS", "TIFF", "PPM", "ICO", "PCX", "TGA"])
def test_only_the_accepted_formats_are_opened(fmt):
    """EPS would run Ghostscript; the rest are parsers nobody needs here. Not one is even tried."""
    data = encode(Image.new("RGB", (16, 16), "white"), fmt)
    with pytest.raises(BadInput, match=r"not an image in a format read here \(PNG, JPEG, WEBP, GIF, BMP\)"):
        open_image(data)


@pytest.mark.parametrize("fmt", ["PNG", "JPEG", "WEBP", "GIF", "BMP"])
def test_the_accepted_formats_decode(fmt):
    digit = np.zeros((40, 40), np.uint8)
    digit[8:32, 18:23] = 255
    x = mnistify(decode_image(encode(Image.fromarray(digit).convert("RGB"), fmt)))
    assert x.shape == (SIDE, SIDE) and x.max() > 0.5


def test_a_webp_over_its_own_pixel_limit_is_refused_before_decoding():
    data = encode(Image.new("L", (2049, 2048)), "WEBP", lossless=True)
    with pytest.raises(BadInput, match=r"image is 2049x2048: more than 4194304 pixels \(for WEBP\)"):
        open_image(data)


def test_a_png_full_of_text_chunks_is_refused_while_it_opens():
    """16 MB of text in a small file, within Pillow's default 64 MB allowance: refused at 1 MiB."""
    info = PngImagePlugin.PngInfo()
    for i in range(80):
        info.add_text(f"k{i}", "A" * 200_000, zip=True)
    data = encode(Image.new("L", (28, 28)), "PNG", pnginfo=info)
    assert len(data) < 100_000
    with pytest.raises(BadInput, match="Too much memory used in text chunks"):
        open_image(data)


def test_decode_rejects_huge_dimensions():
    # A 1-bit 5000x5000 PNG is a few KB but would decode to 25 M pixels.
    data = png(np.zeros((5000, 5000), bool), mode="1")
    assert len(data) < 100_000
    with pytest.raises(BadInput, match="5000x5000"):
        decode_image(data)


# --- raw pixel arrays ---------------------------------------------------------------------------------


def test_pixels_in_unit_range_and_flat_are_accepted():
    x = np.random.default_rng(0).random((28, 28))
    np.testing.assert_allclose(pixels_to_array(x.tolist()), x, atol=1e-6)
    np.testing.assert_allclose(pixels_to_array(x.ravel().tolist()), x, atol=1e-6)
    assert pixels_to_array(x).dtype == np.float32


def test_pixels_over_one_mean_0_to_255():
    x = np.zeros((28, 28))
    x[10, 10], x[11, 11] = 255, 51
    out = pixels_to_array(x)
    assert out[10, 10] == 1 and out[11, 11] == pytest.approx(0.2)


@pytest.mark.parametrize(
    ("values", "message"),
    [
        (np.zeros((27, 28)), r"shape \(27, 28\)"),
        (np.zeros(785), r"shape \(785,\)"),
        (np.zeros((28, 28, 1)), r"shape \(28, 28, 1\)"),
        ([[0.0] * 28] * 27 + [[0.0] * 5], "28x28"),  # ragged
        ([["a"] * 28] * 28, "numbers"),
        (np.full((28, 28), np.nan), "NaN"),
        (np.full(784, np.inf), "NaN or infinite"),
        (np.full(784, -0.5), r"-0.5\.\.-0.5"),
        (np.full((28, 28), 256.0), "0..255"),
        ([10**400] * 784, "too big"),
    ],
)
def test_bad_pixels_name_the_problem(values, message):
    with pytest.raises(BadInput, match=message):
        pixels_to_array(values)


# --- the MNIST steps ----------------------------------------------------------------------------------


def test_ink_on_black_keeps_white_on_black():
    x = bar()
    np.testing.assert_array_equal(ink_on_black(x), x)


def test_ink_on_black_inverts_dark_on_light():
    out = ink_on_black(1 - bar())
    np.testing.assert_array_equal(out, bar())


def test_grey_paper_and_faint_pencil_are_stretched_to_full_range():
    photo = 0.7 - 0.3 * bar()  # grey paper 0.7, pencil 0.4
    out = ink_on_black(photo)
    assert out.min() == 0 and out.max() == pytest.approx(1)
    assert out[20, 20] == pytest.approx(1) and out[0, 0] == 0


@pytest.mark.parametrize(
    "picture",
    [
        np.zeros((28, 28)),
        np.ones((100, 80)),
        np.random.default_rng(0).uniform(0, 0.05, (60, 60)),  # sensor noise, no ink
        np.full((40, 40), 0.5),
    ],
)
def test_blank_pictures_are_empty_input(picture):
    with pytest.raises(EmptyInput, match="blank"):
        mnistify(picture)


def test_empty_input_is_a_bad_input_and_a_digits_error():
    assert issubclass(EmptyInput, BadInput) and issubclass(BadInput, DigitsError)


def test_crop_to_ink_ignores_faint_noise():
    x = bar() + 0.1  # faint haze everywhere, under the ink threshold
    x[0, 0] = 0.15
    crop = crop_to_ink(x)
    assert crop.shape == (20, 10)
    assert crop.min() == pytest.approx(1.1)


def test_a_stray_speck_is_empty():
    x = np.zeros((28, 28), np.float32)
    x[3, 4] = x[3, 5] = 1
    with pytest.raises(EmptyInput, match="2 ink pixel"):
        crop_to_ink(x)


@pytest.mark.parametrize(
    ("shape", "expected"),
    [((100, 40), (20, 8)), ((30, 90), (7, 20)), ((5, 5), (20, 20)), ((200, 3), (20, 1))],
)
def test_fit_box_keeps_the_aspect_ratio(shape, expected):
    out = fit_box(np.ones(shape, np.float32))
    assert out.shape == expected
    assert out.dtype == np.float32 and out.min() >= 0 and out.max() <= 1


def test_fit_box_antialiases_thin_strokes():
    # A 2 px stroke in a 200 px picture is 0.2 px at 20x20: it fades to grey instead of vanishing.
    x = np.zeros((200, 200), np.float32)
    x[:, 99:101] = 1
    x[0, :] = 1
    out = fit_box(x)
    column = out[10:, 8:12].max(axis=1)
    assert (column > 0.05).all() and (column < 0.5).all()


def test_paste_centered_puts_the_centre_of_mass_at_pixel_14():
    rng = np.random.default_rng(1)
    for _ in range(20):
        h, w = rng.integers(3, 21, 2)
        blob = rng.random((h, w)).astype(np.float32) ** 3
        out = paste_centered(blob)
        assert out.shape == (28, 28)
        cy, cx = center_of_mass(out)
        assert abs(cy - 14) <= 0.5 and abs(cx - 14) <= 0.5
        assert out.sum() == pytest.approx(blob.sum(), rel=1e-5)  # nothing cut off


def test_paste_centered_keeps_a_lopsided_digit_inside():
    blob = np.zeros((20, 20), np.float32)
    blob[0, :] = 1  # all the mass on the top row
    blob[1:, 10] = 0.01
    out = paste_centered(blob)
    assert out.sum() == pytest.approx(blob.sum(), rel=1e-5)


def test_mnistify_output_is_mnist_shaped():
    x = np.zeros((300, 200), np.float32)
    x[40:250, 60:90] = 0.6  # a tall "1" off-centre
    out = mnistify(x)
    assert out.shape == (28, 28) and out.dtype == np.float32
    assert out.min() == 0 and out.max() == pytest.approx(1)
    rows = np.flatnonzero((out > 0.2).any(axis=1))
    assert rows.max() - rows.min() + 1 == 20  # the long side fills the 20 px box
    cy, cx = center_of_mass(out)
    assert abs(cy - 14) <= 0.5 and abs(cx - 14) <= 0.5


def test_mnist_digits_are_almost_unchanged(mnist_test):
    # MNIST was made this way, so re-doing it must barely move a pixel: this pins the conventions
    # (20x20 box, centre of mass at pixel 14 rather than 13.5).
    images, _ = mnist_test
    diffs = [np.abs(mnistify(x) - x).mean() for x in images[:50]]
    assert np.median(diffs) < 0.01


@pytest.mark.parametrize(
    "bad", [np.full((9, 9), np.nan), np.full((9, 9), 1.5), np.zeros(784), np.zeros((1, 9))]
)
def test_mnistify_rejects_bad_arrays(bad):
    with pytest.raises(BadInput):
        mnistify(bad)


# --- robustness: real MNIST digits moved, resized and put on big canvases ----------------------------


def _on_canvas(digit: np.ndarray, scale: float, rng: np.random.Generator, side: int = 200) -> np.ndarray:
    h = round(28 * scale)
    resized = np.asarray(Image.fromarray(digit).resize((h, h), Image.BILINEAR)).clip(0, 1)
    canvas = np.zeros((side, side), np.float32)
    top, left = rng.integers(0, side - h + 1, 2)
    canvas[top : top + h, left : left + h] = resized
    return canvas


VARIANTS = {
    "shifted 28x28": lambda d, rng: np.roll(d, rng.integers(-3, 4, 2), axis=(0, 1)),
    "small on 200x200": lambda d, rng: _on_canvas(d, 0.7, rng),
    "scaled x2 on 200x200": lambda d, rng: _on_canvas(d, 2, rng),
    "large on 200x200": lambda d, rng: _on_canvas(d, 6, rng),
    "dark on light": lambda d, rng: 1 - _on_canvas(d, 3, rng),
    "photo of grey paper": lambda d, rng: (
        0.85 - 0.7 * _on_canvas(d, 3, rng) + rng.normal(0, 0.03, (200, 200))
    ),
}


@pytest.fixture(scope="module")
def classify(small_model_path):
    from digits.models import load_model

    model = load_model(small_model_path)
    return lambda images: model(np.stack(images)[..., None], training=False).numpy().argmax(axis=1)


@pytest.mark.parametrize("variant", VARIANTS)
def test_moved_and_resized_digits_are_still_recognised(mnist_test, classify, variant):
    images, labels = mnist_test
    rng = np.random.default_rng(0)
    pictures = [VARIANTS[variant](x, rng).clip(0, 1) for x in images]
    accuracy = (classify([mnistify(p) for p in pictures]) == labels).mean()
    assert accuracy >= 0.98, f"{variant}: {accuracy:.1%} of {len(labels)} digits"


def test_without_mnistify_the_same_pictures_fail(mnist_test, classify):
    # Why the steps matter: squashing the whole 200x200 canvas to 28x28 loses most digits.
    images, labels = mnist_test
    rng = np.random.default_rng(0)
    squashed = [
        np.asarray(Image.fromarray(_on_canvas(x, 2, rng)).resize((28, 28), Image.BILINEAR)) for x in images
    ]
    assert (classify(squashed) == labels).mean() < 0.5


def test_pixels_of_an_mnist_digit_come_back_unchanged(mnist_test):
    """An MNIST digit is already what mnistify makes: given as pixels (a 0-255 list), it comes back."""
    x = (mnist_test[0][0] * 255).round().astype(np.uint8)
    out = prepare_pixels(x.tolist())
    assert out.shape == (28, 28) and out.dtype == np.float32
    np.testing.assert_allclose(out, x / 255, atol=1e-3)


def test_as_served_flags_blank_pictures() -> None:
    images = np.zeros((2, SIDE, SIDE), np.uint8)
    images[1, 5:20, 12:16] = 255
    served, ink = as_served(images)
    assert ink.tolist() == [False, True] and served[0].max() == 0 and served[1].max() == 255
