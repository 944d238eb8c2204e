"""serving.uploads on in-memory images: every valid image becomes an RGB picture, every bad upload a clear refusal
(``BadUpload`` with a message naming the field and a 4xx status), never another exception."""

from __future__ import annotations

import io
import struct
import zlib

import numpy as np
import pytest
from PIL import Image

from serving.uploads import BadUpload, UploadLimits, check_k, decode_image

LIMITS = UploadLimits()


def encode(image: Image.Image, fmt: str = "PNG", **options) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **options)
    return buffer.getvalue()


def chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def png_declaring(width: int, height: int) -> bytes:
    """A PNG whose header declares ``width`` × ``height`` (greyscale) with one row of pixel data."""
    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\0" * (width + 1)))
            + chunk(b"IEND", b""))


def refusal(data: bytes, limits: UploadLimits = LIMITS, field: str = "sketch") -> BadUpload:
    with pytest.raises(BadUpload) as caught:
        decode_image(data, limits, field)
    assert str(caught.value).startswith(f"{field}: ")
    return caught.value


def test_white_square_decodes_unchanged():
    picture = decode_image(encode(Image.new("RGB", (5, 3), "white")), LIMITS)
    assert picture.mode == "RGB" and picture.size == (5, 3)
    assert np.asarray(picture).min() == 255


@pytest.mark.parametrize(("mode", "fmt"), [
    ("1", "PNG"), ("L", "PNG"), ("LA", "PNG"), ("P", "PNG"), ("RGB", "PNG"), ("RGBA", "PNG"), ("I;16", "PNG"),
    ("I;16B", "TIFF"), ("I", "TIFF"), ("F", "TIFF"), ("PA", "TIFF"), ("CMYK", "JPEG"), ("CMYK", "TIFF"),
    ("YCbCr", "JPEG"), ("LAB", "TIFF"), ("L", "JPEG"), ("RGB", "WEBP"), ("RGBA", "WEBP"), ("RGB", "BMP"),
    ("1", "BMP"), ("P", "GIF"), ("RGB", "TIFF"),
])
def test_every_mode_and_format_becomes_rgb(mode: str, fmt: str):
    picture = decode_image(encode(Image.new(mode, (9, 7)), fmt), LIMITS)
    assert picture.mode == "RGB" and picture.size == (9, 7)


@pytest.mark.parametrize("fmt", ["ICO", "PPM", "TGA", "DDS", "SPIDER"])
def test_formats_outside_the_accepted_set_are_refused(fmt: str):
    with pytest.raises(BadUpload, match="not an image of an accepted format") as caught:
        decode_image(encode(Image.new("RGB", (9, 7)), fmt), LIMITS)
    assert caught.value.status == 400


def test_transparency_becomes_white():
    rgba = Image.new("RGBA", (4, 4), (255, 0, 0, 0))
    rgba.putpixel((0, 0), (255, 0, 0, 255))
    picture = np.asarray(decode_image(encode(rgba), LIMITS))
    assert tuple(picture[0, 0]) == (255, 0, 0) and tuple(picture[3, 3]) == (255, 255, 255)
    la = Image.new("LA", (2, 2), (0, 0))
    assert np.asarray(decode_image(encode(la), LIMITS)).min() == 255


def test_sixteen_bit_greyscale_is_scaled_to_eight_bits():
    deep = Image.fromarray(np.array([[0, 32768, 65535]], dtype=np.uint16))
    assert deep.mode.startswith("I;16")
    row = np.asarray(decode_image(encode(deep), LIMITS))[0, :, 0]
    assert row[0] == 0 and 120 <= row[1] <= 135 and row[2] == 255


def test_exif_orientation_is_applied():
    image = Image.new("RGB", (40, 20), "white")
    image.paste((0, 0, 0), (0, 0, 10, 20))  # the left quarter black
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90° clockwise to display
    picture = decode_image(encode(image, "JPEG", exif=exif, quality=95), LIMITS)
    assert picture.size == (20, 40)
    pixels = np.asarray(picture.convert("L"))
    assert pixels[:10].mean() < 60 and pixels[-10:].mean() > 200  # the black band is now at the top


@pytest.mark.parametrize("fmt", ["GIF", "PNG", "WEBP"])
def test_animated_image_gives_its_first_frame(fmt: str):
    red, green = Image.new("RGB", (8, 8), (255, 0, 0)), Image.new("RGB", (8, 8), (0, 255, 0))
    data = encode(red, fmt, save_all=True, append_images=[green], duration=100, loop=0)
    assert getattr(Image.open(io.BytesIO(data)), "n_frames", 1) == 2
    r, g, _ = np.asarray(decode_image(data, LIMITS))[4, 4].astype(int)
    assert r > 200 and g < 60


def test_empty_upload_is_refused():
    error = refusal(b"")
    assert error.status == 400 and "empty" in str(error)


@pytest.mark.parametrize("data", [b"hello", b"\x00" * 100, b"%PDF-1.4 not an image", b'{"k": 3}'])
def test_non_image_bytes_are_refused(data: bytes):
    error = refusal(data)
    assert error.status == 400 and "not an image" in str(error)


@pytest.mark.parametrize("fmt", ["PNG", "JPEG", "WEBP", "TIFF", "GIF", "BMP"])
def test_truncated_images_are_refused(fmt: str):
    noise = Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8))
    data = encode(noise, fmt)
    error = refusal(data[: len(data) // 2])
    assert error.status == 400


@pytest.mark.parametrize(("width", "height"), [(0, 5), (5, 0), (0, 0)])
def test_zero_size_images_are_refused(width: int, height: int):
    assert refusal(png_declaring(width, height)).status == 400


def test_a_zero_dimension_that_pillow_lets_through_is_refused(monkeypatch: pytest.MonkeyPatch):
    class Empty:
        size = (0, 3)

    monkeypatch.setattr("serving.uploads.Image.open", lambda *_, **__: Empty())
    error = refusal(b"whatever")
    assert error.status == 400 and "0×3" in str(error)


def test_bodies_over_the_byte_limit_are_refused():
    error = refusal(encode(Image.new("RGB", (10, 10))), UploadLimits(max_bytes=50))
    assert error.status == 413 and "limit of 50 bytes" in str(error)


def test_images_over_the_side_limit_are_refused_before_decoding():
    error = refusal(png_declaring(13000, 10))  # 130 k pixels, but one side over 12000
    assert error.status == 413 and "13000×10" in str(error) and "12000 per side" in str(error)


def test_a_decompression_bomb_is_refused():
    bomb = encode(Image.new("1", (20000, 20000)))  # 400 M pixels in a few tens of kilobytes
    assert len(bomb) < 100_000
    error = refusal(bomb)
    assert error.status == 413 and "decompression bomb" in str(error)


def test_images_over_the_pixel_limit_are_refused():
    error = refusal(png_declaring(7000, 7000))  # each side allowed, 49 M pixels not
    assert error.status == 413 and "40000000 pixels" in str(error)


@pytest.mark.parametrize("side", [10_000, 20_000])  # Pillow's warning (> 89 M pixels) and its error (> 179 M)
def test_decompression_bombs_are_refused_when_the_limits_allow_them(side: int):
    generous = UploadLimits(max_side=10**6, max_pixels=10**12)
    error = refusal(png_declaring(side, side), generous)
    assert error.status == 413 and "decompression bomb" in str(error)


def test_limits_are_configurable():
    small = UploadLimits(max_bytes=10**6, max_pixels=100, max_side=10, max_k=5)
    assert decode_image(encode(Image.new("L", (10, 10))), small).size == (10, 10)
    assert refusal(encode(Image.new("L", (11, 5))), small).status == 413
    assert refusal(encode(Image.new("L", (10, 11))), small).status == 413
    assert check_k(5, small) == 5
    with pytest.raises(BadUpload, match="limit of 5"):
        check_k(6, small)
    assert small.to_dict() == {"max_bytes": 10**6, "max_pixels": 100, "max_side": 10, "max_k": 5}


def test_the_field_names_the_upload_in_messages():
    assert str(refusal(b"", field="images[3]")).startswith("images[3]: ")


@pytest.mark.parametrize("k", [1, 12, 1000])
def test_check_k_accepts_integers_within_the_limit(k: int):
    assert check_k(k, LIMITS) == k


@pytest.mark.parametrize("k", [0, -1, -(10**20), True, False, "3", 2.0, None])
def test_check_k_refuses_non_positive_and_non_integers(k: object):
    with pytest.raises(BadUpload, match="k: must be an integer >= 1") as caught:
        check_k(k, LIMITS)  # type: ignore[arg-type]
    assert caught.value.status == 422


@pytest.mark.parametrize("k", [1001, 10**30])
def test_check_k_refuses_k_over_the_limit(k: int):
    with pytest.raises(BadUpload, match="exceeds the limit of 1000") as caught:
        check_k(k, LIMITS)
    assert caught.value.status == 422


@pytest.mark.filterwarnings("ignore::UserWarning")  # Pillow warns of corrupt metadata it skips
@pytest.mark.parametrize("seed", range(4))
def test_corrupted_images_are_refused_not_crashed(seed: int):
    """Random byte damage to images of several formats: decoded or refused with ``BadUpload``, nothing else
    (Pillow raises NotImplementedError, AttributeError, struct.error, … on some of them)."""
    rng = np.random.default_rng(seed)
    base = Image.linear_gradient("L").resize((24, 16)).convert("RGB")
    seeds = [encode(base, fmt) for fmt in ("PNG", "JPEG", "GIF", "WEBP", "TIFF", "BMP", "DDS", "SPIDER", "ICO")]
    for _ in range(400):
        data = bytearray(seeds[rng.integers(len(seeds))])
        for _ in range(rng.integers(1, 6)):
            position = int(rng.integers(len(data)))
            if rng.random() < 0.7:
                data[position] = int(rng.integers(256))
            else:
                del data[position: position + int(rng.integers(1, 16))]
            if not data:
                break
        try:
            assert decode_image(bytes(data), LIMITS).mode == "RGB"
        except BadUpload as error:
            assert error.status in (400, 413) and str(error)
