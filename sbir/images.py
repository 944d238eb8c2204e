"""Image normalisation shared by training, evaluation, baselines and serving, so they cannot drift apart."""

from __future__ import annotations

from PIL import Image, ImageOps


def flatten_alpha(image: Image.Image) -> Image.Image:
    """Transparent pixels become white (sketches and emoji are drawn on transparent canvases)."""
    if image.mode in ("RGBA", "LA", "P", "PA"):
        background = Image.new("RGBA", image.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, image.convert("RGBA"))
    return image


def square_rgb(image: Image.Image, size: int) -> Image.Image:
    """RGB, transparency flattened to white, aspect kept and padded with white to ``size`` × ``size``."""
    return ImageOps.pad(flatten_alpha(image).convert("RGB"), (size, size), color=(255, 255, 255),
                        method=Image.Resampling.BILINEAR)
