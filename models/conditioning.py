"""Modality-conditioned squeeze-and-excitation (SAKE's CSE-ResNet, which DSN builds on): each SE block's
excitation also reads the image's modality tag (0 sketch, 1 photo), so one backbone computes domain-specific
channel gates.

``condition_on_modality`` turns every timm ``SEModule`` of a network into a ``ModalitySE``: the second
excitation layer gains one input, the tag, whose weights start at zero, so the pretrained network is unchanged
until training moves them. The tag travels out of band (timm's blocks call ``se_module(x)``): ``ModalityTag``
holds it, and the network sets it before each backbone call.
"""

from __future__ import annotations

import threading

import torch
from torch import nn


class ModalityTag:
    """The modality tags of the images in the current backbone call: (N,) floats, 0 sketch and 1 photo. Per
    thread: a server may run the sketch and the photo encoder at once."""

    def __init__(self) -> None:
        self._local = threading.local()

    @property
    def value(self) -> torch.Tensor | None:
        return getattr(self._local, "value", None)

    def set(self, tags: torch.Tensor) -> None:
        self._local.value = tags.float()


class ModalitySE(nn.Module):
    """SE whose excitation is ``sigmoid(fc2([relu(fc1(mean(x))), tag]))`` (SAKE's ``CSEModule``)."""

    def __init__(self, se: nn.Module, tag: ModalityTag) -> None:
        super().__init__()
        reduced, channels = se.fc2.in_channels, se.fc2.out_channels
        self.fc1 = se.fc1
        self.fc2 = nn.Conv2d(reduced + 1, channels, kernel_size=1)
        with torch.no_grad():
            self.fc2.weight.zero_()
            self.fc2.weight[:, :reduced] = se.fc2.weight
            self.fc2.bias.copy_(se.fc2.bias)
        self.tag = tag

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.tag.value is None or len(self.tag.value) != len(x):
            raise RuntimeError("ModalitySE: set the modality tag of this batch before the backbone runs")
        squeezed = torch.relu(self.fc1(x.mean((2, 3), keepdim=True)))
        tag = self.tag.value.to(device=squeezed.device, dtype=squeezed.dtype).view(-1, 1, 1, 1)
        return x * torch.sigmoid(self.fc2(torch.cat([squeezed, tag], dim=1)))


def condition_on_modality(network: nn.Module) -> ModalityTag:
    """Replace every timm ``SEModule`` in ``network`` by a ``ModalitySE`` sharing one tag; returns the tag.
    A network without SE blocks cannot be conditioned: an error says so."""
    from timm.models.senet import SEModule

    tag = ModalityTag()
    replaced = 0
    for parent in list(network.modules()):
        for name, child in list(parent.named_children()):
            if isinstance(child, SEModule):
                setattr(parent, name, ModalitySE(child, tag))
                replaced += 1
    if replaced == 0:
        raise ValueError(f"{type(network).__name__} has no squeeze-and-excitation blocks to condition on the "
                         "modality (e.g. timm:legacy_seresnet50 has)")
    return tag
