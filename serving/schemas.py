"""The service's request fields and answers as typed schemas: what the OpenAPI document (``/docs``) shows,
with examples, and what the service checks its own answers against."""

from __future__ import annotations

from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field

from serving.uploads import Upload

ImageUpload = Annotated[Upload, Field(description="an image file: PNG, JPEG, WebP, GIF, BMP or TIFF, any mode (CMYK, "
                                                "palette, 16-bit, alpha, EXIF-rotated and animated are converted)")]
K = Annotated[int, Field(description="how many gallery photos to return (1 … the server's max_k; more than the "
                                     "gallery holds returns the whole gallery)", examples=[12])]
Category = Annotated[str | None, Field(description="only photos of this gallery category (case, spaces, hyphens "
                                                   "and underscores ignored); omit for all", examples=["cat-face"])]
Style = Annotated[str | None, Field(description="only photos of this style (the artwork set it came from, e.g. "
                                                "`twemoji`; `/info` lists them); omit for all", examples=["fluent_3d"])]
PhotoId = Annotated[int, Field(description="a gallery photo's id (a search result's `id`)", examples=[17])]


class SearchHit(BaseModel):
    rank: int = Field(examples=[1])
    id: int = Field(description="gallery photo id", examples=[114])
    score: float = Field(description="cosine similarity of the sketch and photo embeddings", examples=[0.66])
    category: str = Field(examples=["cat-face"])
    instance_id: str = Field(description="the photo's instance (for OpenMoji: the emoji hexcode)", examples=["1F638"])
    label: str = Field(examples=["grinning cat face with smiling eyes"])
    style: str = Field(description="the photo's style: the set it came from", examples=["openmoji_zs"])
    image_url: str = Field(description="the photo's thumbnail", examples=["/gallery/114.png"])


class ModelRef(BaseModel):
    method: str = Field(examples=["dsn"])
    version: str = Field(examples=["2b2bc6931e056978"])


class SearchResponse(BaseModel):
    results: list[SearchHit]
    k: int = Field(examples=[12])
    gallery_size: int = Field(examples=[1592])
    model: ModelRef
    elapsed_ms: float = Field(description="server time for this search", examples=[6.6])


class PatchMatchOut(BaseModel):
    sketch_patch: list[int] = Field(description="(row, column) in the sketch's patch grid", examples=[[7, 4]])
    photo_patch: list[int] = Field(examples=[[7, 4]])
    weight: float = Field(description="the pair's share of the score", examples=[0.0065])


class Explanation(BaseModel):
    model_config = ConfigDict(extra="allow")

    score: float = Field(examples=[0.66])
    photo_id: int = Field(examples=[114])
    method: str = Field(examples=["dsn"])
    sketch_grid: list[int] = Field(examples=[[8, 8]])
    photo_grid: list[int] = Field(examples=[[8, 8]])
    matches: list[PatchMatchOut]
    sketch_heatmap: list[list[float]] = Field(description="per-patch share of the match, in [0, 1]")
    photo_heatmap: list[list[float]]
    picture: str = Field(description="sketch and photo with heatmaps and matched patches (PNG data URL)",
                         examples=["data:image/png;base64,iVBORw0KGgo..."])


class Synthesis(BaseModel):
    picture: str = Field(description="a photo-like picture assembled from gallery patches (PNG data URL)")
    method: str
    photo_ids: list[int] = Field(description="the gallery photos the patches came from (the sketch's top photos)")
    grid: list[int] = Field(description="rows, columns of the sketch's patch grid", examples=[[8, 8]])
    sources: list[list[list[int]]] = Field(
        description="per cell of the grid: [index into photo_ids, row, column] of the patch that replaced it")
    weights: list[list[float]] = Field(description="per cell: how strongly the source patch matched")
    num_photos: int
