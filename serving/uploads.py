"""Turning uploaded bytes into a picture the encoders take, or a clear refusal (never a crash).

Valid but unusual images are converted, not refused: CMYK, palette, 16-bit, 1-bit, greyscale and alpha become
RGB on white; EXIF orientation is applied; an animated image gives its first frame. Refused, with a message
saying what was expected: empty bodies, bytes Pillow cannot identify, truncated files, images with a zero or
an over-limit dimension or pixel count (decompression bombs are caught before decoding), oversized bodies.
"""

from __future__ import annotations

import io
import warnings
from dataclasses import dataclass
from pathlib import PurePosixPath
from typing import Any

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError
from pydantic_core import core_schema

from sbir.images import flatten_alpha
from sbir.ink import BLANK_INK_FRACTION, ink_fraction


@dataclass(frozen=True)
class UploadLimits:
    """What the service accepts; every limit is configurable (``ZSSBIR_MAX_*`` environment variables)."""

    max_bytes: int = 10 * 1024 * 1024
    max_pixels: int = 40_000_000
    max_side: int = 12_000
    max_k: int = 1000

    def to_dict(self) -> dict[str, int]:
        return {"max_bytes": self.max_bytes, "max_pixels": self.max_pixels, "max_side": self.max_side,
                "max_k": self.max_k}


# The formats the service opens: the web's and cameras'. Others Pillow can read (EPS via
# Ghostscript, DDS, SPIDER, …) are refused: every extra decoder is attack surface a sketch search does not need.
ACCEPTED_FORMATS = ("PNG", "JPEG", "WEBP", "GIF", "BMP", "TIFF")  # JPEG opens multi-picture (MPO) files too


class Upload(PurePosixPath):
    """An uploaded file held in memory: ``data`` its bytes, the path its client-side name, ``picture`` the image
    once decoded (a batched route decodes before batching, ``serving.guards``). A ``PurePath`` only so that
    BentoML treats the field as a file part of a multipart form; unlike BentoML's ``Path`` fields, nothing is
    written to a temporary file."""

    data: bytes = b""
    picture: Image.Image | None = None

    @classmethod
    def of(cls, value: Any) -> Upload:
        if isinstance(value, Upload):
            return value
        if hasattr(value, "file") and hasattr(value, "filename"):  # Starlette's UploadFile of a form part
            value.file.seek(0)
            upload = cls(PurePosixPath(value.filename or "upload").name or "upload")
            upload.data, upload.picture = value.file.read(), getattr(value, "decoded_picture", None)
            return upload
        if isinstance(value, bytes):
            upload = cls("upload")
            upload.data = value
            return upload
        raise ValueError("expected a file upload (multipart/form-data)")

    @classmethod
    def __get_pydantic_core_schema__(cls, source: Any, handler: Any) -> core_schema.CoreSchema:
        return core_schema.no_info_plain_validator_function(
            cls.of, serialization=core_schema.plain_serializer_function_ser_schema(lambda upload: upload.data))

    @classmethod
    def __get_pydantic_json_schema__(cls, schema: Any, handler: Any) -> dict[str, Any]:
        return {"type": "file", "format": "binary"} if handler.mode == "validation" else {"type": "string",
                                                                                          "format": "binary"}


class BadUpload(ValueError):
    """An upload the service refuses; ``status`` is the HTTP status to answer (400, 413 or 422)."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.status = status


def _to_rgb(image: Image.Image) -> Image.Image:
    if image.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        array = np.asarray(image, dtype=np.float64)
        high = array.max() if array.size else 0.0
        scaled = (array / high * 255.0) if high > 255 else array
        image = Image.fromarray(np.clip(scaled, 0, 255).astype(np.uint8), mode="L")
    elif image.mode == "1":
        image = image.convert("L")
    elif image.mode == "CMYK":
        image = image.convert("RGB")
    return flatten_alpha(image).convert("RGB")


def decode_image(data: bytes, limits: UploadLimits, field: str = "image") -> Image.Image:
    """Bytes of any image format Pillow reads → an RGB picture within ``limits``; otherwise ``BadUpload``."""
    if not data:
        raise BadUpload(f"{field}: the file is empty; expected an image (PNG, JPEG, WebP, …)")
    if len(data) > limits.max_bytes:
        raise BadUpload(f"{field}: {len(data)} bytes exceeds the limit of {limits.max_bytes} bytes", 413)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            Image.init()  # registers every plugin (MPO, WebP, TIFF…); Image.open(formats=…) expects them loaded
            image = Image.open(io.BytesIO(data), formats=ACCEPTED_FORMATS)
            width, height = image.size
            if width < 1 or height < 1:
                raise BadUpload(f"{field}: the image is {width}×{height} pixels; expected at least 1×1")
            if max(width, height) > limits.max_side or width * height > limits.max_pixels:
                raise BadUpload(f"{field}: {width}×{height} pixels exceeds the limits (at most {limits.max_side} "
                                f"per side and {limits.max_pixels} pixels)", 413)
            image.seek(0)  # an animated image: its first frame
            image = ImageOps.exif_transpose(image)
            image.load()
            return _to_rgb(image)
    except BadUpload:
        raise
    except UnidentifiedImageError:
        raise BadUpload(f"{field}: not an image of an accepted format ({len(data)} bytes starting "
                        f"{data[:8]!r}); expected PNG, JPEG, WebP, GIF, BMP or TIFF") from None
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as error:
        raise BadUpload(f"{field}: refused as a decompression bomb ({error})", 413) from None
    except Exception as error:  # malformed bytes make Pillow's plugins raise anything: OSError, SyntaxError,
        # EOFError, struct.error, NotImplementedError (DDS), AttributeError (SPIDER), …
        raise BadUpload(f"{field}: the image could not be decoded ({type(error).__name__}: {error}); "
                        "is the file truncated or corrupt?") from None


def check_k(k: int, limits: UploadLimits) -> int:
    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
        raise BadUpload(f"k: must be an integer >= 1, got {k!r}", 422)
    if k > limits.max_k:
        raise BadUpload(f"k: {k} exceeds the limit of {limits.max_k} results per request", 422)
    return k


def check_has_ink(sketch: Image.Image, field: str = "sketch") -> Image.Image:
    """A 422 for a blank or near-blank sketch (``sbir.ink.BLANK_INK_FRACTION``): nothing to search with, where
    the encoder would still return confident-looking neighbours of an empty page."""
    fraction = ink_fraction(sketch)
    if fraction < BLANK_INK_FRACTION:
        raise BadUpload(f"{field}: the sketch is empty (its strokes cover {fraction:.3%} of the picture; at least "
                        f"{BLANK_INK_FRACTION:.1%} is needed): draw something to search with", 422)
    return sketch
