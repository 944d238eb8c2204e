"""Atomic writes, stored embeddings and match explanations: the core's file and data contracts."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from sbir.embeddings import EmbeddingsError, manifest_rows, read_embeddings, write_embeddings
from sbir.explanations import MatchExplanation, PatchMatch, draw_explanation
from sbir.io import atomic_write, atomic_write_json
from sbir.manifest import manifest_fingerprint, read_manifest, write_manifest


def test_atomic_write_keeps_the_old_file_when_writing_fails(tmp_path: Path) -> None:
    target = atomic_write_json(tmp_path / "a" / "doc.json", {"v": 1})
    assert target.read_text() == '{\n  "v": 1\n}\n'

    def broken(handle) -> None:
        handle.write(b"half a document")
        raise RuntimeError("killed mid-write")

    with pytest.raises(RuntimeError):
        atomic_write(target, broken)
    assert target.read_text() == '{\n  "v": 1\n}\n'
    assert os.listdir(target.parent) == ["doc.json"]  # no temporary file left behind


def test_embeddings_round_trip_and_belong_to_their_manifest(tiny_dataset: Path, tmp_path: Path) -> None:
    manifest = read_manifest(tiny_dataset)
    rows = manifest_rows(manifest, ("test_unseen",))
    assert (manifest.frame["path"].iloc[rows["row"]].to_numpy() == rows["path"].to_numpy()).all()
    vectors = np.random.default_rng(0).normal(size=(len(rows), 4)).astype(np.float32)
    meta = {"manifest_fingerprint": manifest_fingerprint(manifest)}
    write_embeddings(tmp_path / "e", vectors, rows, meta)
    stored = read_embeddings(tmp_path / "e", manifest)
    assert np.array_equal(stored.vectors, vectors) and stored.meta["count"] == len(rows)
    sketch_vectors, sketch_rows = stored.select(split="test_unseen", domain="sketch")
    assert (sketch_rows["domain"] == "sketch").all() and len(sketch_vectors) == len(sketch_rows) == 3
    changed = manifest.frame.copy()
    changed.loc[0, "content_hash"] = "0" * 64
    write_manifest(changed, tmp_path / "m", dataset="tiny", image_root=manifest.image_root)
    with pytest.raises(EmbeddingsError, match="another version of the tiny manifest"):
        read_embeddings(tmp_path / "e", read_manifest(tmp_path / "m"))
    with pytest.raises(EmbeddingsError, match="run the embed stage"):
        read_embeddings(tmp_path / "absent")
    with pytest.raises(EmbeddingsError, match="vectors for"):
        write_embeddings(tmp_path / "bad", vectors[:1], rows, meta)


def _explanation(**changes) -> MatchExplanation:
    values = dict(score=0.8, sketch_grid=(2, 3), photo_grid=(4, 4),
                  matches=(PatchMatch((0, 2), (3, 3), 0.9), PatchMatch((1, 0), (0, 0), 0.2)),
                  sketch_heatmap=np.full((2, 3), 0.5), photo_heatmap=np.zeros((4, 4)))
    return MatchExplanation(**{**values, **changes})


def test_explanations_check_their_patches_and_draw() -> None:
    explanation = _explanation()
    assert explanation.to_dict()["matches"][0] == {"sketch_patch": [0, 2], "photo_patch": [3, 3], "weight": 0.9}
    with pytest.raises(ValueError, match=r"photo patch \(4, 0\) lies outside the \(4, 4\) patch grid"):
        _explanation(matches=(PatchMatch((0, 0), (4, 0), 1.0),))
    with pytest.raises(ValueError, match="sketch_heatmap has shape"):
        _explanation(sketch_heatmap=np.zeros((3, 2)))
    with pytest.raises(ValueError, match="in \\[0, 1\\]"):
        _explanation(photo_heatmap=np.full((4, 4), 2.0))
    sketch = Image.new("L", (50, 50), 255)
    photo = Image.new("RGB", (80, 60), (0, 200, 0))
    picture = draw_explanation(sketch, photo, explanation, size=100, gap=20)
    assert picture.size == (2 * 100 + 20 + 2, 100 + 20 + 2)
    pixels = np.asarray(picture)
    # the half-weight sketch heatmap tints the white sketch red; a line is drawn in the gap between the images
    assert pixels[1 + 10, 1 + 10, 0] > pixels[1 + 10, 1 + 10, 1]
    gap = pixels[1:101, 1 + 100:1 + 120]
    assert (np.abs(gap.astype(int) - (30, 110, 230)).sum(axis=2) < 60).any()
