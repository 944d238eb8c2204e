"""Stage ``pretrain_clip``: a small CLIP trained on a prepared dataset's ``train`` split, the CLIP that the
``clip_prompt`` method freezes and prompts (no published CLIP weights are reachable offline).

The architecture is data (``pretrain_clip.architecture``: open_clip's CLIP config, plus ``patch_tokens``: how
the image tower gets its patch tokens, see ``models.clip.tower``). Captions come from the train rows only, so no
test category's name or image is ever seen: on OpenMoji-ZS each image is captioned with its emoji's Unicode
name and its category (``a picture of {name}, a {category}``); datasets without names are captioned with the
category alone. By default a sketch and its photo share one caption, so each is the other's positive through
the text: worded per domain (``a photo of`` / ``a drawing of``) the unseen fine-grained Acc@1 of the
pretrained tower fell from 0.235 to 0.055 (benchmarks/results/clip_tokenizer_ablation.md). Tokenizer: open_clip's
default BPE at the architecture's ``text_cfg.context_length``.

Params: ``pretrain_clip`` and ``train.dataset`` (``train.runtime.num_threads`` and ``workers`` only run it).
Output: ``artifacts/clip/<dataset>/`` (``model.safetensors``, ``config.json``: byte-for-byte reproducible) and
``artifacts/train/pretrain_clip/<dataset>/summary.json`` (counts, losses and wall times; not cached).
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch

from models.backbones import OPENAI_MEAN, OPENAI_STD
from models.clip.pretrain import CaptionedImages, PretrainConfig, pretrain
from models.clip.tower import build_clip, category_phrase, save_clip_folder, tokenizer_for
from models.data import TrainSplit, decode_all, read_split
from models.engine import RuntimeConfig, TrainSection, seed_everything
from models.interface import Preprocess
from sbir import paths
from sbir.config import Params
from sbir.io import atomic_write_json
from sbir.manifest import Manifest, read_manifest
from sbir.stage import run_stage, stage_parser

log = logging.getLogger("stages.pretrain_clip")



@dataclass
class CaptionTemplates:
    """Caption of each image: with the item's name where the dataset has names, else the category alone."""

    photo: str
    sketch: str
    photo_without_name: str
    sketch_without_name: str


@dataclass
class PretrainClipParams:
    """``params.yaml`` ``pretrain_clip``."""

    architecture: dict[str, Any]  # open_clip's CLIP config, as data
    patch_tokens: dict[str, Any] | None  # None: ViT pixel patches; else a pretrained CNN cut at a stage
    captions: CaptionTemplates
    train: PretrainConfig

    def full_architecture(self) -> dict[str, Any]:
        return {**self.architecture, "patch_tokens": self.patch_tokens}


def item_names(manifest: Manifest) -> dict[str, str] | None:
    """Instance id → readable name where the dataset has them (OpenMoji: the emoji's Unicode name), else None."""
    if not manifest.dataset.startswith("openmoji"):
        return None
    from sbir.datasets.openmoji import emoji_test_file, load_catalogue, openmoji_svg_dir

    return {item.hexcode: item.name.lower() for item in load_catalogue(emoji_test_file(), openmoji_svg_dir())}


def captions_for(manifest: Manifest, templates: CaptionTemplates, names: dict[str, str] | None,
                 split: str = "train") -> dict[str, list[str]]:
    """Per domain, one caption per row of ``split`` in manifest order (the order of ``models.data.read_split``)."""
    out = {}
    for domain in ("photo", "sketch"):
        rows = manifest.select(split=split, domain=domain).reset_index(drop=True)
        captions = []
        for category, instance in zip(rows["category"], rows["instance_id"]):
            name = names.get(instance) if names and isinstance(instance, str) else None
            template = getattr(templates, domain if name else f"{domain}_without_name")
            captions.append(template.format(name=name, category=category_phrase(category)))
        out[domain] = captions
    return out


def sketches_of_photo(data: TrainSplit) -> list[torch.Tensor]:
    """Per photo, the sketches drawn from it; without links, the sketches of its category."""
    linked: list[list[int]] = [[] for _ in data.photo_paths]
    for sketch, photo in enumerate(data.sketch_to_photo.tolist()):
        if photo >= 0:
            linked[photo].append(sketch)
    by_category = [torch.nonzero(data.sketch_labels == c).flatten() for c in range(data.num_classes)]
    return [torch.tensor(own) if own else by_category[int(data.photo_labels[i])] for i, own in enumerate(linked)]


def caption_tensors(captions: dict[str, list[str]], context_length: int) -> dict[str, torch.Tensor]:
    """Token ids of every image's caption, and caption ids (one per distinct text, shared across domains)."""
    unique = sorted(set(captions["photo"]) | set(captions["sketch"]))
    index = {text: i for i, text in enumerate(unique)}
    tokens = tokenizer_for(context_length)(unique)
    ids = {domain: torch.tensor([index[t] for t in texts], dtype=torch.int64) for domain, texts in captions.items()}
    return {"photo_tokens": tokens[ids["photo"]], "sketch_tokens": tokens[ids["sketch"]],
            "photo_captions": ids["photo"], "sketch_captions": ids["sketch"]}


def pretrain_clip(manifest: Manifest, params: PretrainClipParams, runtime: RuntimeConfig, out: Path, *,
                  log_dir: Path | None = None, stop_after_steps: int | None = None) -> dict[str, Any]:
    """Train the small CLIP on a prepared dataset's train split and write its folder; returns the summary, also
    written to ``log_dir/summary.json`` when given (never into ``out``: its wall times would keep the cached
    CLIP folder from reproducing)."""
    dataset = manifest.dataset
    data = read_split(manifest, "train")
    architecture = params.full_architecture()
    size = int(architecture["vision_cfg"]["image_size"])
    context = int(architecture["text_cfg"].get("context_length", 77))
    captions = captions_for(manifest, params.captions, item_names(manifest))
    started = time.perf_counter()
    preprocess = Preprocess(image_size=size, mean=OPENAI_MEAN, std=OPENAI_STD)
    images = CaptionedImages(photos=decode_all(data.photo_paths, preprocess, runtime.workers),
                             sketches=decode_all(data.sketch_paths, preprocess, runtime.workers),
                             sketches_of_photo=sketches_of_photo(data), **caption_tensors(captions, context))
    load_seconds = time.perf_counter() - started
    seed_everything(params.train.seed, runtime.num_threads)
    model = build_clip(architecture)
    log.info("pretraining CLIP on %s: %d photos, %d sketches, %d categories, %d distinct captions", dataset,
             len(data.photo_paths), len(data.sketch_paths), data.num_classes,
             len(set(captions["photo"]) | set(captions["sketch"])))
    history = pretrain(model, images, params.train, stop_after_steps=stop_after_steps)
    facts = {"dataset": dataset, "train_categories": data.categories, "data_fingerprint": data.fingerprint,
             "captions": asdict(params.captions), "pretrain": asdict(params.train),
             "epoch_loss": [round(x, 6) for x in history["epoch_loss"]]}
    save_clip_folder(out, model, architecture, facts)
    summary = {"dataset": dataset, "photos": len(data.photo_paths), "sketches": len(data.sketch_paths),
               "categories": data.num_classes, "steps": history["steps"], "train_seconds": history["seconds"],
               "load_seconds": round(load_seconds, 1), "first_loss": round(history["epoch_loss"][0], 4),
               "last_loss": round(history["epoch_loss"][-1], 4)}
    if log_dir is not None:
        atomic_write_json(Path(log_dir) / "summary.json", summary)
    return summary


def run_pretrain(args: argparse.Namespace, params: Params) -> dict[str, Any]:
    settings = params.read(TrainSection, "train")
    values = params.read(PretrainClipParams, "pretrain_clip")
    dataset = args.dataset or settings.dataset
    return pretrain_clip(read_manifest(paths.prepared_dir(dataset)), values, settings.runtime,
                         args.out or paths.pretrained_clip_dir(dataset), log_dir=paths.pretrain_log_dir(dataset),
                         stop_after_steps=args.stop_after_steps)


def main(argv: list[str] | None = None) -> int:
    parser = stage_parser(__doc__)
    parser.add_argument("--dataset", default=None, help="default: train.dataset")
    parser.add_argument("--out", type=Path, default=None, help="default: artifacts/clip/<dataset>")
    parser.add_argument("--stop-after-steps", type=int, default=None, help="end early (smoke runs, tests)")
    return run_stage("pretrain_clip", parser, run_pretrain, argv)


if __name__ == "__main__":
    sys.exit(main())
