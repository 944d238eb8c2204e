"""The pretrain_clip stage on the tiny OpenMoji-ZS: captions from train rows only, a loss that decreases, a
loadable CLIP folder that clip_prompt builds on."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest
import torch

from models.clip.prompt import ClipPrompt, ClipPromptConfig
from models.clip.pretrain import PretrainConfig
from models.clip.tower import category_phrase, load_clip_folder, read_clip_config
from models.data import read_split
from models.engine import RuntimeConfig
from sbir.manifest import read_manifest
from stages.pretrain_clip import (CaptionTemplates, PretrainClipParams, caption_tensors, captions_for, item_names,
                                  main, pretrain_clip, sketches_of_photo)
from helpers import config as params_config
from helpers import write_params
from stages.report import pretraining_seconds

TINY_ARCH = {"embed_dim": 16,
             "vision_cfg": {"image_size": 32, "patch_size": 8, "width": 32, "layers": 1, "head_width": 16},
             "text_cfg": {"context_length": 20, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 1}}
PARAMS = params_config(PretrainClipParams, "pretrain_clip", architecture=TINY_ARCH, patch_tokens=None,
                            train=params_config(PretrainConfig, "pretrain_clip.train", epochs=4, batch_size=16, lr=3e-3, warmup_steps=2))
RUN = params_config(RuntimeConfig, "train.runtime", num_threads=1, workers=0)


def test_captions_come_from_train_items_only(tiny_openmoji: Path) -> None:
    manifest = read_manifest(tiny_openmoji)
    names = item_names(manifest)
    captions = captions_for(manifest, params_config(CaptionTemplates, "pretrain_clip.captions"), names)
    frame = manifest.frame
    train = frame[frame["split"] == "train"]
    assert len(captions["photo"]) == (train["domain"] == "photo").sum()
    assert len(captions["sketch"]) == (train["domain"] == "sketch").sum()
    assert captions["photo"][0].startswith("a picture of ") and captions["sketch"][0].startswith("a picture of ")
    named = {text.split(" of ", 1)[1].rsplit(", a ", 1)[0] for text in captions["photo"] + captions["sketch"]}
    categories = {text.rsplit(", a ", 1)[1] for text in captions["photo"] + captions["sketch"]}
    tested = frame[frame["split"] != "train"]
    assert named == {names[i] for i in train["instance_id"]}
    assert not named & {names[i] for i in tested["instance_id"]}  # no test item's name
    unseen = {category_phrase(c) for c in frame.loc[frame["split"] == "test_unseen", "category"]}
    assert categories == {category_phrase(c) for c in train["category"]} and not categories & unseen
    plain = captions_for(manifest, params_config(CaptionTemplates, "pretrain_clip.captions"), None)  # a dataset without names: the category alone
    assert set(plain["photo"]) == {f"a picture of a {c}" for c in categories}
    # a sketch is captioned like the photo it was drawn from: one caption id, positives of each other
    ids = caption_tensors(captions, 20)
    data = read_split(manifest, "train")
    linked = data.sketch_to_photo >= 0
    assert torch.equal(ids["sketch_captions"][linked], ids["photo_captions"][data.sketch_to_photo[linked]])
    assert ids["photo_tokens"].shape == (len(captions["photo"]), 20)


def test_every_photo_gets_its_own_sketches(tiny_openmoji: Path) -> None:
    data = read_split(read_manifest(tiny_openmoji), "train")
    pools = sketches_of_photo(data)
    for photo, pool in enumerate(pools):
        assert len(pool) and all(int(data.sketch_to_photo[s]) == photo for s in pool.tolist())
    unlinked = replace(data, sketch_to_photo=torch.full_like(data.sketch_to_photo, -1))
    pools = sketches_of_photo(unlinked)
    assert all((data.sketch_labels[pool] == data.photo_labels[i]).all() for i, pool in enumerate(pools))


def test_pretraining_lowers_the_loss_and_writes_a_loadable_folder(tiny_openmoji: Path, tmp_path: Path) -> None:
    summary = pretrain_clip(read_manifest(tiny_openmoji), PARAMS, RUN, tmp_path / "clip")
    config = read_clip_config(tmp_path / "clip")
    losses = config["epoch_loss"]
    assert len(losses) == 4 and losses[-1] < losses[0] and summary["last_loss"] < summary["first_loss"]
    assert config["context_length"] == 20 and config["architecture"]["patch_tokens"] is None
    data = read_split(read_manifest(tiny_openmoji), "train")
    assert config["train_categories"] == data.categories and config["data_fingerprint"] == data.fingerprint
    model, architecture, tokenizer = load_clip_folder(tmp_path / "clip")
    assert architecture["embed_dim"] == 16 and tokenizer(["a photo of a cat"]).shape == (1, 20)
    method = ClipPrompt(params_config(ClipPromptConfig, "clip_prompt.model", clip=str(tmp_path / "clip"), prompts=1))
    method.use_categories(data.categories)
    net = method.build(data.num_classes)
    assert torch.equal(net.visual.proj, model.visual.proj)  # the pretrained tower, as saved
    assert method.config.architecture == architecture


def test_the_cached_clip_folder_reproduces_byte_for_byte(tiny_openmoji: Path, tmp_path: Path) -> None:
    """DVC caches artifacts/clip/<dataset>: two runs on the same inputs write the same bytes (no wall times)."""
    manifest = read_manifest(tiny_openmoji)
    folders = []
    for run in ("first", "second"):
        summary = pretrain_clip(manifest, PARAMS, RUN, tmp_path / run / "clip", log_dir=tmp_path / run / "log",
                                stop_after_steps=2)
        assert "train_seconds" in summary and (tmp_path / run / "log/summary.json").is_file()
        folders.append(tmp_path / run / "clip")
    files = [{p.relative_to(f).as_posix(): p.read_bytes() for p in sorted(f.rglob("*")) if p.is_file()}
             for f in folders]
    assert sorted(files[0]) == ["config.json", "model.safetensors"]
    assert files[0] == files[1]


def test_cli_reads_params_and_reports_bad_ones(tiny_openmoji: Path, tmp_path: Path,
                                               monkeypatch: pytest.MonkeyPatch, capsys) -> None:
    monkeypatch.chdir(tmp_path)
    Path("data/prepared").mkdir(parents=True)
    Path("data/prepared/openmoji_zs").symlink_to(tiny_openmoji)
    section = {"architecture": TINY_ARCH, "patch_tokens": None, "train": {"epochs": 1, "batch_size": 16}}
    write_params(Path("params.yaml"), {"train": {"dataset": "openmoji_zs", "runtime": {"num_threads": 1, "workers": 0}},
                                       "pretrain_clip": section})
    assert main(["--stop-after-steps", "2"]) == 0
    line = capsys.readouterr().out.strip().splitlines()[-1]  # the stage's one line
    assert line.startswith("pretrain_clip: dataset openmoji_zs,") and ", steps 2," in line
    assert (tmp_path / "artifacts/clip/openmoji_zs/model.safetensors").is_file()
    # the run summary (wall times) lies outside the cached CLIP folder: dvc.yaml's uncached out
    assert sorted(p.name for p in Path("artifacts/clip/openmoji_zs").iterdir()) == ["config.json", "model.safetensors"]
    logged = json.loads(Path("artifacts/train/pretrain_clip/openmoji_zs/summary.json").read_text())
    assert logged["steps"] == 2 and "train_seconds" in logged
    # the comparison table counts it for the model that starts from that CLIP
    Path("artifacts/checkpoints/clip_prompt").mkdir(parents=True)
    Path("artifacts/checkpoints/clip_prompt/config.json").write_text(
        json.dumps({"config": {"clip": "artifacts/clip/openmoji_zs"}}))
    assert pretraining_seconds(tmp_path, "clip_prompt") == logged["train_seconds"]
    assert pretraining_seconds(tmp_path, "dsn") is None
    write_params(Path("params.yaml"), {"train": {"dataset": "openmoji_zs"},
                                       "pretrain_clip": {**section, "train": {"epochs": "many"}}})
    assert main([]) == 2 and "pretrain_clip.train.epochs" in capsys.readouterr().err
