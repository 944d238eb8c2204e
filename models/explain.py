"""Explanation sheets: why a model ranks photos for a sketch, as one picture per query.

For a sketch and its ranked photos, a sheet shows, for each of the first photos, the patch correspondences and
heatmaps of the match (``MatchExplainer``), and, where the model synthesises (``PatchSynthesizer``), the
photo-like picture assembled from the ranked photos' patches beside the sketch and the first photo. The evaluate
stage writes sheets for sample hits and misses; the service and notebooks call ``query_sheet`` directly.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from PIL import Image, ImageOps

from models.interface import MatchExplainer, PatchSynthesizer, RetrievalModel
from sbir.explanations import draw_explanation, explanation_sheet
from sbir.images import square_rgb


@dataclass(frozen=True)
class RankedPhoto:
    """One photo of a query's ranking, and how to caption it."""

    image: Image.Image
    caption: str


def model_view(model: RetrievalModel, image: Image.Image, domain: str) -> Image.Image:
    """The image as the encoder sees it (ink-normalised, padded square), so patches line up with its grid."""
    return Image.fromarray(model.preprocess(domain).load(image).permute(1, 2, 0).numpy())


def can_explain(model: RetrievalModel) -> bool:
    return isinstance(model, (MatchExplainer, PatchSynthesizer))


def query_sheet(model: RetrievalModel, sketch: Image.Image, ranked: Sequence[RankedPhoto], title: str,
                explained: int = 3, synthesis_photos: int = 8, size: int = 160) -> Image.Image | None:
    """One query's sheet: explanations of the first ``explained`` photos and a synthesis from the first
    ``synthesis_photos``; None where the model has neither capability."""
    rows: list[tuple[str, Image.Image]] = []
    sketch_view = model_view(model, sketch, "sketch")
    if isinstance(model, MatchExplainer):
        for photo in ranked[:explained]:
            explanation = model.explain(sketch, photo.image)
            picture = draw_explanation(sketch_view, model_view(model, photo.image, "photo"), explanation, size=size)
            rows.append((photo.caption, picture))
    if isinstance(model, PatchSynthesizer) and ranked:
        synthesis = model.synthesize(sketch, [photo.image for photo in ranked[:synthesis_photos]], size=size)
        strip = Image.new("RGB", (3 * size + 16, size), "white")
        for slot, picture in enumerate((sketch_view, synthesis.image, ranked[0].image)):
            strip.paste(square_rgb(picture, size), (slot * (size + 8), 0))
        rows.append((f"sketch | synthesised from the top {min(len(ranked), synthesis_photos)} photos' patches | "
                     f"{ranked[0].caption}", ImageOps.expand(strip, border=1, fill=(200, 200, 200))))
    return explanation_sheet(rows, title) if rows else None
