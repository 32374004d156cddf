"""A small digit classifier, trained once on the embedded MNIST digits, that judges generated digits.

It turns "do the samples look like digits?" into numbers: the class of each sample, how confident
the classifier is, and how evenly the classes are covered. Training is deterministic (fixed seed,
one thread) and takes about half a minute; the weights are cached beside the decoded-image cache,
keyed by a version, so later evaluations score with the same classifier.
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from .checkpoint import read_file, save_atomic
from .data import default_cache_dir, preprocess, to_tensor
from .sources import load_mnist_digits

CLASSIFIER_VERSION = 1  # bump when the architecture or the training recipe changes
INPUT_SIZE = 32  # the classifier sees 32x32 grayscale digits; other sizes are resized


class DigitClassifier(nn.Module):
    """(B, 1, 32, 32) in [-1, 1] -> (B, 10) logits."""

    def __init__(self):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(1, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),  # (B, 32, 16, 16)
            nn.Conv2d(32, 64, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),  # (B, 64, 8, 8)
        )  # fmt: skip
        self.head = nn.Sequential(nn.Flatten(), nn.Linear(64 * 8 * 8, 128), nn.ReLU(), nn.Linear(128, 10))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(images))


def digits_at_input_size(images: np.ndarray) -> torch.Tensor:
    """uint8 (N, H, W[, 1]) digits -> float (N, 1, 32, 32) in [-1, 1], resized as training data is."""
    if images.ndim == 3:
        images = images[..., None]
    if images.shape[1:3] != (INPUT_SIZE, INPUT_SIZE):
        from PIL import Image

        images = np.stack([preprocess(Image.fromarray(image[..., 0]), INPUT_SIZE, 1) for image in images])
    return to_tensor(images)


def train_classifier(images: np.ndarray, labels: np.ndarray, epochs: int = 8, seed: int = 0) -> DigitClassifier:
    """Fit on uint8 digits with small random shifts (the generator's digits are not centred as carefully)."""
    generator = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    model = DigitClassifier()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    inputs, targets = digits_at_input_size(images), torch.as_tensor(labels, dtype=torch.long)
    for _ in range(epochs):
        order = torch.randperm(len(inputs), generator=generator)
        for start in range(0, len(order), 64):
            batch = order[start : start + 64]
            shift = torch.randint(-2, 3, (2,), generator=generator).tolist()
            x = torch.roll(inputs[batch], shifts=shift, dims=(2, 3))
            loss = F.cross_entropy(model(x), targets[batch])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
    return model.eval()


@torch.no_grad()
def predict(model: DigitClassifier, images: np.ndarray, batch_size: int = 500) -> tuple[np.ndarray, np.ndarray]:
    """Class and softmax confidence of each uint8 digit image: two arrays of shape (N,)."""
    classes, confidences = [], []
    for start in range(0, len(images), batch_size):
        probabilities = F.softmax(model(digits_at_input_size(images[start : start + batch_size])), dim=1)
        confidence, label = probabilities.max(dim=1)
        classes.append(label.numpy())
        confidences.append(confidence.numpy())
    return np.concatenate(classes), np.concatenate(confidences)


def load_classifier(cache_dir: Optional[Path] = None, log=print) -> DigitClassifier:
    """The cached classifier, trained on all 5,000 embedded digits the first time it is asked for."""
    path = Path(cache_dir or default_cache_dir()) / f"digit-classifier-v{CLASSIFIER_VERSION}.pt"
    model = DigitClassifier()
    if path.is_file():
        model.load_state_dict(read_file(path))
        return model.eval()
    log("training the digit classifier on the embedded MNIST digits (once; cached)")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # one thread: no run-to-run variation from parallel reductions
    try:
        images, labels = load_mnist_digits()
        model = train_classifier(images, labels)
    finally:
        torch.set_num_threads(threads)
    path.parent.mkdir(parents=True, exist_ok=True)
    save_atomic(model.state_dict(), path)
    return model
