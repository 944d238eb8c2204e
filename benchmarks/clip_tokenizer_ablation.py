"""Ablation: how the small CLIP's image tower gets its patch tokens, measured end to end on OpenMoji-ZS.

Each variant overrides only ``pretrain_clip.patch_tokens`` (and, where named, ``pretrain_clip.train`` or
``pretrain_clip.captions``) of the committed ``params.yaml``: it pretrains the small CLIP on the train split
(``stages.pretrain_clip``), learns the prompts with the committed ``clip_prompt`` section through the training
engine, then embeds and evaluates the unseen categories like the pipeline does (``stages.embed`` /
``stages.evaluate``). Same schedules, same seeds.

- ``A``: plain ViT pixel patches (``visual.conv1``, a strided convolution), random initialisation;
- ``B``: EfficientNet-Lite0 (ImageNet weights from its package) cut after stage 2 (stride 8: a 64 px image is an
  8×8×40 map), frozen, + a 1×1 projection to the ViT width, as the patch tokens; ``B'`` the same CNN trained at
  a tenth of the learning rate (its BatchNorms stay frozen).

One more row measures the captions: ``B`` with each domain worded apart (``a photo of`` / ``a drawing of``),
so that a sketch and its photo no longer share a caption.

Results accumulate in benchmarks/results/clip_tokenizer_ablation.{json,md} (a variant already there is skipped
unless ``--again``): ``python benchmarks/clip_tokenizer_ablation.py --only A --threads 1``.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path
from typing import Any

from models.data import read_split
from models.embed import EmbedParams, embed_dataset
from models.engine import TrainSection, train
from sbir import paths
from sbir.config import ConfigError, Params
from sbir.embeddings import read_embeddings
from sbir.env import apply_offline_defaults
from sbir.io import atomic_write_json, atomic_write_text
from sbir.logs import setup_logging
from sbir.manifest import read_manifest
from stages.evaluate import EvaluateParams, evaluate_embeddings
from stages.pretrain_clip import PretrainClipParams, pretrain_clip
from stages.train import method_settings

RESULTS = Path(__file__).parent / "results"
NAME = "clip_tokenizer_ablation"
DOMAIN_WORDED = {"photo": "a photo of {name}, a {category}", "sketch": "a drawing of {name}, a {category}",
                 "photo_without_name": "a photo of a {category}", "sketch_without_name": "a drawing of a {category}"}
# The patch tokens of B: the CNN of params.yaml's pretrain_clip.patch_tokens (committed: EfficientNet-Lite0 from
# its package, cut after stage 2)
CNN_TOKENS = "pretrain_clip.patch_tokens"
# name -> (patch_tokens: None for pixel patches or CNN_TOKENS, overrides of pretrain_clip.train, overrides of
# pretrain_clip.captions)
VARIANTS: dict[str, tuple[str | None, dict[str, Any], dict[str, str]]] = {
    "A: ViT pixel patches (random init)": (None, {}, {}),
    "B: EfficientNet-Lite0 stage 2, frozen, + 1x1 projection": (CNN_TOKENS, {}, {}),
    "B': EfficientNet-Lite0 stage 2, lr x0.1, + 1x1 projection": (CNN_TOKENS, {"stem_lr_factor": 0.1}, {}),
    "B, captions worded per domain (a photo of / a drawing of)": (CNN_TOKENS, {}, DOMAIN_WORDED),
}
COLUMNS = {"mAP@all": "map_all/sklearn/query", "mAP@all VOC/class": "map_all/voc/class",
           "mAP@200": "preset/zse/map_200", "P@100": "p_100/k/query", "FG Acc@1": "fg/acc@1/gallery", "FG Acc@5": "fg/acc@5/gallery"}


def variant_params(params: Params, patch_tokens: str | None, pretrain_overrides: dict[str, Any],
                   captions: dict[str, str], threads: int | None) -> Params:
    """``params`` with one variant's ``pretrain_clip`` changes (and ``--threads``) laid over it."""
    tokens = dict(params.section(patch_tokens)) if patch_tokens else None
    if patch_tokens and not tokens:
        raise ConfigError(f"{params.source}: {patch_tokens} is null; the B variants need its CNN")
    values = (params.replaced("pretrain_clip", {"patch_tokens": tokens})
              .replaced("pretrain_clip.train", pretrain_overrides).replaced("pretrain_clip.captions", captions))
    return values.replaced("train.runtime", {"num_threads": threads}) if threads else values


def run_variant(patch_tokens: str | None, pretrain_overrides: dict[str, Any], captions: dict[str, str],
                params: Params, manifest, out: Path, threads: int | None = None) -> dict[str, Any]:
    """Pretrain, learn prompts, embed and evaluate one variant; wall times of each phase."""
    params = variant_params(params, patch_tokens, pretrain_overrides, captions, threads)
    settings = params.read(TrainSection, "train")
    pre = params.read(PretrainClipParams, "pretrain_clip")
    load = os.getloadavg()[0]
    started = time.perf_counter()
    pretrained = pretrain_clip(manifest, pre, settings.runtime, out / "clip")
    pretrain_seconds = time.perf_counter() - started
    method, config = method_settings(params.replaced("clip_prompt.model", {"clip": str(out / "clip")}), "clip_prompt")
    started = time.perf_counter()
    net, times = train(method, config, settings.runtime, read_split(manifest, "train"), out / "state", progress=False)
    prompt_seconds = time.perf_counter() - started
    model = method.export(net)
    embed_dataset(model, manifest, out / "embeddings", params.read(EmbedParams, "embed"), progress=False)
    document = evaluate_embeddings(read_embeddings(out / "embeddings", manifest), manifest,
                                   params.replaced("evaluate", {"generalised": False}).read(EvaluateParams, "evaluate"),
                                   out / "eval", None, model)
    row = {label: round(float(document["zero_shot"][key]), 4) for label, key in COLUMNS.items()}
    return {**row, "pretrain_seconds": round(pretrain_seconds, 1), "prompt_seconds": round(prompt_seconds, 1),
            "total_seconds": round(pretrain_seconds + prompt_seconds, 1), "pretrain_steps": pretrained["steps"],
            "pretrain_loss": [pretrained["first_loss"], pretrained["last_loss"]], "prompt_steps": times.steps,
            "seconds_per_prompt_step": round((times.data + times.compute) / max(times.steps, 1), 3),
            "load_average_at_start": round(load, 2), "threads": settings.runtime.num_threads}


def write(results: dict[str, Any], params: Params) -> None:
    atomic_write_json(RESULTS / f"{NAME}.json", results)
    pre = params.section("pretrain_clip.train")
    prompt = params.section("clip_prompt.train")
    lines = [f"# Small CLIP: pixel patches or pretrained CNN tokens ({Path(__file__).name})", "",
             "Each row pretrains the small CLIP of `params.yaml` (`pretrain_clip`) on the OpenMoji-ZS train split "
             "with the row's `patch_tokens`, learns the prompts with the committed `clip_prompt` section, then "
             "embeds and scores the 17 unseen categories (1,194 sketch queries, 398 photos) as the pipeline does. "
             f"Schedules and seeds are equal: pretraining {pre.get('epochs')} epochs of {pre.get('batch_size')} "
             f"photos (+ one sketch each), lr {pre.get('lr')}; prompt learning {prompt.get('epochs')} epoch(s) of "
             f"batch {prompt.get('batch_size')}, lr {prompt.get('lr')}, seed {prompt.get('seed')}. Wall times on "
             "the 2-core development machine with the torch threads shown: another engineer's jobs shared it (load "
             "average at the start of each row shown; with two busy processes on 2 cores one thread each is ~5x "
             "faster than two each, which oversubscribe the cores). Compare rows with similar load.", "",
             "| variant | " + " | ".join(COLUMNS) + " | pretrain | prompts | total | load | threads |",
             "|---|" + "---|" * (len(COLUMNS) + 5)]
    for name, row in results.items():
        lines.append(f"| {name} | " + " | ".join(f"{row[c]:.3f}" for c in COLUMNS) +
                     f" | {row['pretrain_seconds']:.0f} s ({row['pretrain_steps']} steps) | "
                     f"{row['prompt_seconds']:.0f} s ({row['prompt_steps']} steps) | {row['total_seconds']:.0f} s | "
                     f"{row['load_average_at_start']:.1f} | {row.get('threads', '?')} |")
    conclusion = RESULTS / f"{NAME}.conclusion.md"
    if conclusion.is_file():
        lines += ["", conclusion.read_text().strip()]
    atomic_write_text(RESULTS / f"{NAME}.md", "\n".join(lines) + "\n")


def main() -> None:
    apply_offline_defaults()
    setup_logging()
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--only", nargs="*", help="variant names (or name prefixes) to run")
    parser.add_argument("--again", action="store_true", help="re-run variants already in the results")
    parser.add_argument("--params", default=str(paths.PARAMS))
    parser.add_argument("--prepared", type=Path, default=None,
                        help="a prepared dataset folder (default: data/prepared/<evaluate.dataset>), e.g. a snapshot")
    parser.add_argument("--threads", type=int, default=None,
                        help="torch threads (default train.runtime.num_threads); 1 when another job shares the cores")
    args = parser.parse_args()
    params = Params.load(args.params)
    manifest = read_manifest(args.prepared or paths.prepared_dir(params.value("evaluate.dataset", str)))
    results_file = RESULTS / f"{NAME}.json"
    results = json.loads(results_file.read_text()) if results_file.is_file() else {}
    chosen = [n for n in VARIANTS if not args.only or any(n.startswith(prefix) for prefix in args.only)]
    for name in chosen:  # every variant's settings checked before any work
        variant_params(params, *VARIANTS[name], args.threads).read(PretrainClipParams, "pretrain_clip")
    for name in chosen:
        if name in results and not args.again:
            continue
        with tempfile.TemporaryDirectory() as out:
            results[name] = run_variant(*VARIANTS[name], params, manifest, Path(out), args.threads)
        print(name, json.dumps(results[name]), flush=True)
        write(results, params)
    write(results, params)


if __name__ == "__main__":
    main()
