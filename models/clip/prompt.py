"""CLIP prompt learning (Sain et al., CVPR 2023, "CLIP for All Things Zero-Shot Sketch-Based Image Retrieval,
Fine-Grained or Not"): a frozen CLIP image tower shared by both domains, steered by learnable prompts.

- CLIP: a published open_clip model (``clip: open_clip:ViT-B-32``, ``pretrained: openai`` or a local file) or
  the pipeline's own small CLIP (``clip: artifacts/clip/<dataset>``, stage ``pretrain_clip``). Every CLIP
  weight is frozen except the image tower's LayerNorms (LayerNorm tuning, ``layernorm_lr_factor``).
- Deep visual prompts (VPT-deep): ``prompts`` learnable tokens per transformer layer, one set for sketches and
  one for photos, inserted after the class token at every layer's input and replaced at the next layer
  (``deep: false``: inserted once, at the first layer, as in the authors' released code).
- Losses (``models.clip.losses``; each weighted in ``loss_weights``): a category-level triplet, an instance
  triplet (the photo a sketch was drawn from), classification of the seen categories through CLIP's frozen text
  tower (``text_template`` over the category names, encoded once into a buffer; logits = cosine · CLIP's logit
  scale), the patch-shuffling triplet (views drawn in ``augment``) and the relative-distance regulariser.
- Export: the sketch encoder uses the sketch prompts, the photo encoder the photo prompts; CLIP's projected
  class token, L2-normalised, is the embedding. Inputs are standardised with CLIP's statistics. The exported
  model explains matches (``models.clip.explain``).

The network keeps the image tower (and its frozen weights) and the class text embeddings, not the text tower:
a model folder rebuilds from its own config (the resolved ``architecture``) and weights, with no CLIP download.
Measured on OpenMoji-ZS with the small CLIP: benchmarks/results/clip_tokenizer_ablation.md.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from models.backbones import OPENAI_MEAN, OPENAI_STD, BackboneError
from models.clip.losses import (category_triplet, draw_permutations, instance_triplet, patch_shuffle,
                                relative_distance_regulariser, shuffle_triplet)
from models.clip.tower import architecture_of, build_visual, category_phrase, image_size_of, load_clip, text_features
from models.interface import DOMAINS, Preprocess, TorchRetrievalModel
from models.method import Batch, Method, weighted_total
from models.registry import register_method
from sbir import paths
from sbir.config import Count, NonNegativeFloat, PositiveFloat, PositiveInt

LOSS_TERMS = ("triplet", "instance", "classification", "shuffle", "relative")


PIPELINE_CLIP = "pretrain_clip"  # clip_prompt.model.clip: the CLIP the pipeline pretrained on train.dataset


@dataclass
class ClipPromptConfig:
    """``params.yaml`` ``clip_prompt.model``: types and checks here, the values there."""

    clip: str  # pretrain_clip (the pipeline's CLIP for train.dataset), a CLIP folder, or open_clip:<architecture>
    pretrained: str | None  # open_clip only: a tag (openai, laion2b_s34b_b79k...) or a local weights file
    quick_gelu: bool | None  # open_clip only; null: from the tag, a -quickgelu name, or a local file's checksum
    architecture: dict[str, Any] | None  # resolved from the CLIP when training starts; kept for rebuilding
    prompts: PositiveInt  # learnable tokens per layer and domain
    deep: bool  # a fresh set of prompts at every layer (VPT-deep); false: at the first layer only
    shared_prompts: bool  # one prompt set for both domains (the paper's fine-grained model); false: one per domain
    text_template: str  # the small CLIP's captions; published CLIPs: "a photo of a {}"
    margin: NonNegativeFloat  # category triplet, cosine distance
    instance_margin: NonNegativeFloat
    shuffle_grid: PositiveInt  # patch shuffling: a grid × grid layout of cells
    shuffle_pairs: Count  # pairs per batch that also enter shuffled (the first ones of the random batch)
    shuffle_margin: NonNegativeFloat
    relative_temperature: PositiveFloat  # τ of the relative-distance regulariser
    layernorm_lr_factor: NonNegativeFloat  # the image tower's LayerNorms train at lr × this (authors: 0.1); prompts at lr
    loss_weights: dict[str, NonNegativeFloat]  # per loss term; an unknown term is an error


def standardise(images: torch.Tensor) -> torch.Tensor:
    """Float images in [0, 1] → CLIP's channel statistics (what the exported encoders receive)."""
    mean = torch.tensor(OPENAI_MEAN, device=images.device, dtype=images.dtype).view(1, 3, 1, 1)
    std = torch.tensor(OPENAI_STD, device=images.device, dtype=images.dtype).view(1, 3, 1, 1)
    return (images - mean) / std


class PromptedClip(nn.Module):
    """A frozen CLIP image tower with per-domain deep prompts; unit embeddings and seen-category logits."""

    def __init__(self, visual: nn.Module, config: ClipPromptConfig, num_classes: int,
                 class_text: torch.Tensor | None = None, logit_scale: float = 100.0) -> None:
        super().__init__()
        if not hasattr(visual, "transformer") or not hasattr(visual.transformer, "resblocks"):
            raise BackboneError(f"prompt learning needs an open_clip VisionTransformer, got {type(visual).__name__}")
        self.config = config
        self.visual = visual
        visual.requires_grad_(False)
        for module in visual.modules():  # LayerNorm tuning: only the image tower's LayerNorms learn
            if isinstance(module, nn.LayerNorm):
                module.requires_grad_(True)
        width = int(visual.class_embedding.shape[-1])
        depth = len(visual.transformer.resblocks) if config.deep else 1
        patch = visual.patch_size[0] if isinstance(visual.patch_size, tuple) else int(visual.patch_size)
        bound = math.sqrt(6.0 / (3 * patch * patch + width))  # VPT's (Xavier-uniform) prompt initialisation
        owners = ("shared",) if config.shared_prompts else DOMAINS
        self.prompts = nn.ParameterDict({owner: nn.Parameter(torch.empty(depth, config.prompts, width)
                                                             .uniform_(-bound, bound)) for owner in owners})
        embed_dim = int(visual.output_dim)
        self.register_buffer("class_text", class_text.clone() if class_text is not None
                             else torch.zeros(num_classes, embed_dim))
        self.register_buffer("logit_scale", torch.tensor(float(logit_scale)))

    @property
    def grid(self) -> tuple[int, int]:
        return tuple(int(g) for g in self.visual.grid_size)

    def prompt(self, domain: str) -> nn.Parameter:
        """The domain's prompts (layers, count, width): its own, or the set both domains share."""
        return self.prompts["shared"] if self.config.shared_prompts else self.prompts[domain]

    @property
    def prompt_count(self) -> int:
        return int(next(iter(self.prompts.values())).shape[1])

    def sequence(self, images: torch.Tensor, domain: str,
                 capture_last: bool = False) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Standardised images → the last layer's tokens ``[class, prompts, patches]`` and, with
        ``capture_last``, the last layer's input as a leaf that requires grad (for attribution)."""
        visual, prompts = self.visual, self.prompt(domain)
        count = prompts.shape[1]
        x = visual._embeds(images)  # class token + patch tokens, positions added, ln_pre applied
        batch_first = getattr(visual.transformer, "batch_first", True)
        blocks = visual.transformer.resblocks
        captured = None
        for index, block in enumerate(blocks):
            if index < prompts.shape[0]:  # deep: this layer's prompts replace the previous layer's
                rest = x[:, 1:] if index == 0 else x[:, 1 + count:]
                x = torch.cat([x[:, :1], prompts[index].to(x.dtype).expand(len(x), -1, -1), rest], dim=1)
            if capture_last and index == len(blocks) - 1:
                x = captured = x.detach().requires_grad_(True)
            x = block(x) if batch_first else block(x.transpose(0, 1)).transpose(0, 1)
        return x, captured

    def pool(self, tokens: torch.Tensor) -> torch.Tensor:
        """The tower's own pooling and projection over the class and patch tokens (prompts left out)."""
        count = self.prompt_count
        pooled, _ = self.visual._pool(torch.cat([tokens[:, :1], tokens[:, 1 + count:]], dim=1))
        return pooled @ self.visual.proj if self.visual.proj is not None else pooled

    def patch_features(self, tokens: torch.Tensor) -> torch.Tensor:
        """The last layer's patch tokens in the embedding space (ln_post and projection): (B, L, D)."""
        patches = self.visual.ln_post(tokens[:, 1 + self.prompt_count:])
        return patches @ self.visual.proj if self.visual.proj is not None else patches

    def embed(self, images: torch.Tensor, domain: str) -> torch.Tensor:
        """Standardised images (B, 3, S, S) → unit embeddings (B, D)."""
        return F.normalize(self.pool(self.sequence(images, domain)[0]), dim=-1)

    def forward(self, sketches: torch.Tensor, photos: torch.Tensor, pairs: int) -> dict[str, torch.Tensor]:
        """``pairs`` (sketch, photo) pairs first; after them the shuffled views: sketches (ψ), then photos (ψ)
        and photos (ψ'). One tower call per domain."""
        sketch, photo = self.embed(sketches, "sketch"), self.embed(photos, "photo")
        shuffled = len(sketches) - pairs
        main = torch.cat([sketch[:pairs], photo[:pairs]])
        logits = self.logit_scale * main @ self.class_text.to(main.dtype).T
        return {"sketch": sketch[:pairs], "photo": photo[:pairs], "logits": logits,
                "sketch_shuffled": sketch[pairs:], "photo_shuffled": photo[pairs:pairs + shuffled],
                "photo_other": photo[pairs + shuffled:]}


def clip_prompt_losses(net: PromptedClip, out: dict[str, torch.Tensor], batch: Batch) -> dict[str, torch.Tensor]:
    """Every loss term (unweighted) and their weighted sum under ``total``."""
    config = net.config
    s, p = out["sketch"].float(), out["photo"].float()
    ls, lp, same = batch.sketch_labels, batch.photo_labels, batch.same_instance
    shuffled = len(out["sketch_shuffled"])
    terms = {
        "triplet": category_triplet(s, p, ls, lp, config.margin),
        "instance": instance_triplet(s, p, same, ls, lp, config.instance_margin),
        "classification": F.cross_entropy(out["logits"].float(), torch.cat([ls, lp])),
        "shuffle": shuffle_triplet(out["sketch_shuffled"].float(), out["photo_shuffled"].float(),
                                   out["photo_other"].float(), same.diagonal()[:shuffled], config.shuffle_margin),
        "relative": relative_distance_regulariser(s, p, same, ls, lp, config.relative_temperature),
    }
    return weighted_total(terms, config.loss_weights)


@register_method("clip_prompt")
class ClipPrompt(Method):
    """CLIP prompt learning behind the method contract; each exported domain encoder runs the shared tower with
    that domain's prompts."""

    config_class = ClipPromptConfig

    def __init__(self, config: ClipPromptConfig) -> None:
        super().__init__(config)
        self.categories: list[str] | None = None

    def use_dataset(self, dataset: str) -> None:
        """``clip: pretrain_clip`` is the CLIP that the pipeline's pretrain_clip stage trained on ``dataset``."""
        if self.config.clip == PIPELINE_CLIP:
            self.config = replace(self.config, clip=str(paths.pretrained_clip_dir(dataset)))

    def use_categories(self, categories: list[str]) -> None:
        self.categories = list(categories)

    def architecture(self) -> dict[str, Any]:
        """The CLIP's architecture: as resolved in the config, else read from the CLIP (no weights loaded)."""
        return self.config.architecture or architecture_of(self.config.clip, self.config.pretrained,
                                                           self.config.quick_gelu)

    def build(self, num_classes: int, load_pretrained: bool = True) -> PromptedClip:
        if not load_pretrained:  # a checkpoint's weights (frozen tower and text buffer included) replace these
            return PromptedClip(build_visual(self.architecture()), self.config, num_classes)
        if self.categories is None or len(self.categories) != num_classes:
            raise ValueError(f"{self.name} needs the names of the {num_classes} seen categories before build "
                             "(Method.use_categories; the engine passes them)")
        model, architecture, tokenizer = load_clip(self.config.clip, self.config.pretrained, self.config.quick_gelu)
        if self.config.architecture is not None and self.config.architecture != architecture:
            raise BackboneError(f"{self.config.clip}: its architecture differs from clip_prompt.model.architecture; "
                                "leave that key out (it is filled from the CLIP)")
        texts = [self.config.text_template.format(category_phrase(c)) for c in self.categories]
        class_text = text_features(model, tokenizer, texts)
        scale = float(model.logit_scale.detach().exp().clamp(max=100))
        self.config = replace(self.config, architecture=architecture)
        return PromptedClip(model.visual, self.config, num_classes, class_text, scale)

    def preprocess(self) -> dict[str, Preprocess]:
        plain = Preprocess(image_size=image_size_of(self.architecture()), mean=OPENAI_MEAN, std=OPENAI_STD)
        return dict.fromkeys(DOMAINS, plain)

    @property
    def embedding_dim(self) -> int:
        return int(self.architecture()["embed_dim"])

    def augment(self, sketches: torch.Tensor, photos: torch.Tensor,
                generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        """The augmented pairs, then the patch-shuffled views of the first ``shuffle_pairs`` pairs (ψ and ψ'
        drawn from the step's generator, so a resumed run replays them)."""
        sketches, photos = super().augment(sketches, photos, generator)
        count = min(self.config.shuffle_pairs, len(sketches))
        if count == 0 or self.config.shuffle_grid < 2 or self.config.loss_weights.get("shuffle", 0.0) == 0:
            return sketches, photos
        first, second = draw_permutations(count, self.config.shuffle_grid, generator)
        grid = self.config.shuffle_grid
        return (torch.cat([sketches, patch_shuffle(sketches[:count], first, grid)]),
                torch.cat([photos, patch_shuffle(photos[:count], first, grid),
                           patch_shuffle(photos[:count], second, grid)]))

    def forward(self, model: nn.Module, batch: Batch) -> dict[str, torch.Tensor]:
        return model(standardise(batch.sketches), standardise(batch.photos), len(batch.sketch_labels))

    def losses(self, net: nn.Module, outputs: dict[str, torch.Tensor], batch: Batch) -> dict[str, torch.Tensor]:
        return clip_prompt_losses(net, outputs, batch)

    def param_groups(self, net: nn.Module, lr: float) -> list[dict[str, Any]]:
        """The prompts at ``lr``, the image tower's LayerNorms at ``lr · layernorm_lr_factor``; nothing else."""
        norms = [p for m in net.visual.modules() if isinstance(m, nn.LayerNorm) for p in m.parameters()]
        return [{"params": list(net.prompts.parameters()), "lr": lr},
                {"params": norms, "lr": lr * self.config.layernorm_lr_factor}]

    def exported_class(self) -> type[TorchRetrievalModel]:
        """The encoders with explanations of their matches."""
        from models.clip.explain import ExplainableClipPrompt

        return ExplainableClipPrompt
