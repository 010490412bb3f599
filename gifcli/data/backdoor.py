"""Backdoor poisoning of section 5.3 / appendix C, rebuilt exactly from a JSON index file.

The poisoned images are ``numpy.random.RandomState(seed).choice(N, int(fraction * N),
replace=False)`` of the N training images; each gets the checkerboard trigger
``p[::2, 1::2] = 16; p[1::2, ::2] = 16`` added to its uint8 pixels, clipped to [0, 255], and its
label becomes the target label.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from ..errors import InputFileError, UsageError
from .datasets import Data, ImageTensors, Split, indices_sha256

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


@dataclass
class BackdoorData:
    """A dataset with a backdoor: every split over one poisoned copy of the training images."""

    doc: dict
    data: Data  # the clean data (its test set is the clean test set)
    poisoned: ImageTensors  # training images with the trigger on the poisoned ones, backdoor labels
    is_poison: torch.Tensor  # bool over training positions
    triggered_test: Split  # test images whose label is not the target, triggered, true labels

    @property
    def target_label(self) -> int:
        return int(self.doc["target_label"])

    def _split(self, positions: torch.Tensor, true_labels: bool) -> Split:
        labels = (self.data.train_labels if true_labels else self.poisoned.targets)[positions]
        return Split(self.poisoned, positions, labels)

    def fit(self, true_labels: bool = False) -> Split:
        """The training images as the model saw them (backdoor labels) or with their true labels."""
        return self._split(self.data.fit_indices, true_labels)

    def poisoned_fit(self, true_labels: bool = False) -> Split:
        pos = self.data.fit_indices[self.is_poison[self.data.fit_indices]]
        return self._split(pos, true_labels)

    def clean_fit(self) -> Split:
        return self._split(self.data.fit_indices[~self.is_poison[self.data.fit_indices]], True)

    def validation(self, poisoned: bool) -> Split:
        v = self.data.validation_indices
        return self._split(v[self.is_poison[v] == poisoned], True)

    def bd_data(self) -> Split:
        """Every poisoned training image with its true label (Table 3's 'BD data')."""
        return self._split(torch.nonzero(self.is_poison).reshape(-1), True)


def poison(data: Data, doc: dict) -> BackdoorData:
    """Rebuild the poisoned training set a poison file describes (one uint8 copy of the images)."""
    if data.raw_train is None or data.raw_train.images.dtype != torch.uint8:
        raise UsageError(f"backdoor poisoning needs uint8 images held in memory; {data.spec.name} has none")
    n = data.train_size
    if n != int(doc["train_size"]):
        raise InputFileError(f"the poison file is for a training set of {doc['train_size']} images, found {n}")
    idx = torch.as_tensor(doc["indices"], dtype=torch.int64)
    target, value = int(doc["target_label"]), int(doc["trigger"]["value"])
    data.check_label(target, "the poison file's target label", InputFileError)
    images = data.raw_train.images.clone()
    images[idx] = add_trigger(images[idx], value)
    labels = data.train_labels.clone()
    labels[idx] = target
    is_poison = torch.zeros(n, dtype=torch.bool)
    is_poison[idx] = True
    base: ImageTensors = data.train  # type: ignore[assignment]
    poisoned = ImageTensors(images, labels, (0.0,), (1.0,))
    poisoned.mean, poisoned.std, poisoned.repeat = base.mean, base.std, base.repeat
    keep = data.test_labels != target
    test_raw = data.raw_test.images[keep] if data.raw_test is not None else None
    if test_raw is None:
        raise UsageError(f"backdoor evaluation needs the test images of {data.spec.name} in memory")
    trig = ImageTensors(add_trigger(test_raw, value), data.test_labels[keep], (0.0,), (1.0,))
    trig.mean, trig.std, trig.repeat = base.mean, base.std, base.repeat
    return BackdoorData(doc, data, poisoned, is_poison, Split.of(trig))


__all__ = ["BackdoorData", "POISON_FORMAT", "TRIGGER_VALUE", "add_trigger", "choose_poisoned", "indices_sha256",
           "poison", "trigger_pattern"]
