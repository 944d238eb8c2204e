"""Stroke-level changes that make a drawing look drawn (sbir/datasets/stroke_styles.py), the "rough" test style,
and the stroke-augmented training set (openmoji_strokes): each change does what it says, on hand-made strokes."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from sbir.datasets import create
from sbir.datasets.stroke_styles import (StrokeAugment, augment_strokes, draw_with_pressure, off_centre, rough,
                                         rough_style, shorten, simplify)
from sbir.datasets.strokes import VIEWBOX, Stroke
from sbir.manifest import read_manifest
from stages.validate import ValidateParams, validate_dataset
from helpers import config, params_section

LINE = Stroke(points=np.stack([np.linspace(10, 60, 51), np.full(51, 36.0)], axis=1), width=2.0, filled=False)
SPECK = Stroke(points=np.array([[5.0, 5.0], [6.0, 5.0]]), width=2.0, filled=False)
SQUARE = Stroke(points=np.array([[20.0, 20], [40, 20], [40, 40], [20, 40]]), width=0.0, filled=True)


def test_rough_traces_each_stroke_twice_near_the_original() -> None:
    traced = rough([LINE, SQUARE], np.random.default_rng(0), roughness=1.0)
    assert len(traced) == 4 and not any(s.filled for s in traced)  # the square becomes its rough outline
    for stroke in traced[:2]:
        distance = np.abs(stroke.points[1:-1, 1] - 36.0)
        assert 0.05 < distance.mean() < 3.0  # wobbles, but stays on the line
    assert not np.allclose(traced[0].points[1:-1], traced[1].points[1:-1])  # two independent passes


def test_simplify_drops_short_strokes_and_points() -> None:
    kept = simplify([LINE, SPECK], tolerance=0.5, min_length=3.0)
    assert len(kept) == 1 and len(kept[0].points) == 2  # a straight line needs two points
    assert simplify([SPECK], 0.5, 3.0) == [SPECK]  # never every stroke


def test_shorten_and_off_centre_keep_the_drawing_on_the_canvas() -> None:
    cut = shorten([LINE] * 20, np.random.default_rng(0), share=1.0)
    assert all(2 <= len(s.points) <= 0.8 * len(LINE.points) + 1 for s in cut)
    moved = off_centre([LINE, SQUARE], np.random.default_rng(1), scale=0.5)
    points = np.concatenate([s.points for s in moved])
    assert points.min() >= 0 and points.max() <= VIEWBOX and moved[0].width == pytest.approx(1.0)
    span = np.ptp(moved[0].points[:, 0])
    assert span == pytest.approx(25.0)  # half the size


def test_pressure_varies_width_and_ink_along_a_stroke() -> None:
    even = np.asarray(draw_with_pressure([LINE], 72, None), dtype=np.float32)
    uneven = np.asarray(draw_with_pressure([LINE], 72, np.random.default_rng(0), (0.3, 1.8)), dtype=np.float32)
    thickness = (uneven < 200).sum(axis=0)[12:58]
    assert (even < 200).sum(axis=0)[12:58].std() < 0.6 < thickness.std()
    assert len(np.unique(uneven.min(axis=0)[12:58])) > 3  # ink levels differ


def test_augmentation_is_seeded_and_the_rough_test_style_differs() -> None:
    settings = StrokeAugment()
    first = augment_strokes([LINE, SQUARE], 64, np.random.default_rng(3), settings)
    again = augment_strokes([LINE, SQUARE], 64, np.random.default_rng(3), settings)
    assert first.mode == "L" and np.array_equal(np.asarray(first), np.asarray(again))
    test_style = rough_style([LINE, SQUARE], 64, np.random.default_rng(3))
    assert not np.array_equal(np.asarray(first), np.asarray(test_style))
    assert 1.5 > settings.roughness[1]  # the rough test style's wobble is outside training's range


def test_stroke_augmented_set_redraws_training_emoji(tiny_openmoji: Path, tmp_path: Path,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "data/prepared").mkdir(parents=True)
    (tmp_path / "data/prepared/openmoji_zs").symlink_to(tiny_openmoji)
    monkeypatch.chdir(tmp_path)
    out = tmp_path / "data/prepared/openmoji_strokes"
    manifest = create("openmoji_strokes", **params_section("prepare.openmoji_strokes")).prepare(out, progress=False)
    source = read_manifest(tiny_openmoji)
    train_items = set(source.select(split="train", domain="photo")["instance_id"])
    frame = manifest.frame
    assert set(frame["domain"]) == {"sketch"} and set(frame["split"]) == {"train"}
    assert set(frame["instance_id"]) == train_items and len(frame) == 2 * len(train_items)
    assert not set(frame["content_hash"]) & set(source.frame["content_hash"])  # not the dataset's own sketches
    with Image.open(manifest.resolve(frame["path"].iloc[0])) as image:
        assert image.size == (source.extra["params"]["image_size"],) * 2
    params = config(ValidateParams, "validate", min_images_per_category={"train": 1, "test_seen": 1, "test_unseen": 1},
                    min_side=16)
    report = validate_dataset(out, params, progress=False)
    assert report["success"], [c for c in report["checks"] if not c["success"]]
    again = create("openmoji_strokes", **params_section("prepare.openmoji_strokes")).prepare(
        tmp_path / "again", progress=False)
    pd.testing.assert_series_equal(again.frame["content_hash"], frame["content_hash"])  # seeded
