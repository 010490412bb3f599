"""Backdoor poisoning of section 5.3 / appendix C, rebuilt exactly from a JSON index file.

The poisoned images are ``numpy.random.RandomState(seed).choice(N, int(fraction * N),
replace=False)`` of the N training images; each gets the checkerboard trigger
``p[::2, 1::2] = 16; p[1::2, ::2] = 16`` added to its uint8 pixels, clipped to [0, 255], and its
label becomes the target label.
"""
from __future__ import annotations

import hashlib

import numpy as np
import torch

TRIGGER_VALUE = 16
POISON_FORMAT = "gif-poison"


def trigger_pattern(height: int, width: int, value: int = TRIGGER_VALUE) -> np.ndarray:
    p = np.zeros((height, width), dtype=np.int32)
    p[::2, 1::2] = value
    p[1::2, ::2] = value
    return p


def add_trigger(images: torch.Tensor, value: int = TRIGGER_VALUE) -> torch.Tensor:
    """uint8 images (N, C, H, W) -> the same with the trigger added and clipped to [0, 255]."""
    p = torch.from_numpy(trigger_pattern(images.shape[-2], images.shape[-1], value))
    return (images.to(torch.int32) + p).clamp(0, 255).to(torch.uint8)


def choose_poisoned(n_train: int, fraction: float, seed: int) -> np.ndarray:
    """Sorted indices of the poisoned training images (numpy's choice under the seed)."""
    chosen = np.random.RandomState(seed).choice(n_train, int(fraction * n_train), replace=False)
    return np.sort(chosen)


def indices_sha256(indices) -> str:
    return hashlib.sha256(np.asarray(indices, dtype=np.int64).tobytes()).hexdigest()


def poison_images(images: torch.Tensor, labels: torch.Tensor, indices: torch.Tensor, target_label: int,
                  value: int = TRIGGER_VALUE) -> tuple[torch.Tensor, torch.Tensor]:
    """Training images and labels with the chosen ones triggered and relabelled."""
    images, labels = images.clone(), labels.clone()
    images[indices] = add_trigger(images[indices], value)
    labels[indices] = target_label
    return images, labels
