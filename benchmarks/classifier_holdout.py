"""How good is the ruler? The digit classifier's recipe scored on embedded digits it did not see.

    python benchmarks/classifier_holdout.py                # the recipe `dcgan eval` uses (8 epochs)
    python benchmarks/classifier_holdout.py --epochs 20    # the same, trained longer

The classifier `dcgan eval` uses is trained on all 5,000 embedded digits, so its confidence on
those digits says little about how it treats digits it has not seen, which is what generated
digits are. Here the 5,000 are split into folds (a fixed shuffle); for each fold a classifier of
the same recipe is trained, one thread, on the other digits and scored on the fold. Printed, on
average over the folds: held-out accuracy, the fraction of held-out digits classified with
confidence above 0.9 (the "confident" of `dcgan eval`), the fraction confident and wrong, and the
confident fraction on the digits each classifier was trained on.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from dcgan.classifier import predict, train_classifier
from dcgan.metrics import CONFIDENT
from dcgan.sources import load_mnist_digits


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, help="training epochs (default: the recipe dcgan eval uses)")
    parser.add_argument("--folds", type=int, default=5, help="folds of the 5,000 digits; each is held out once (default 5)")
    parser.add_argument("--max-folds", type=int, help="stop after this many folds (quicker, noisier)")
    args = parser.parse_args()
    if args.folds < 2 or (args.max_folds is not None and args.max_folds < 1):
        parser.error("--folds must be at least 2 (one held out, the rest to train on) and --max-folds at least 1")
    torch.set_num_threads(1)  # as dcgan eval trains its classifier
    images, labels = load_mnist_digits()
    order = np.random.default_rng(123).permutation(len(images))
    folds = np.array_split(order, args.folds)[: args.max_folds]
    recipe = {} if args.epochs is None else {"epochs": args.epochs}
    rows = []
    for index, held_out in enumerate(folds):
        started = time.perf_counter()
        seen = np.setdiff1d(order, held_out)
        model = train_classifier(images[seen], labels[seen], **recipe)
        classes, confidence = predict(model, images[held_out])
        correct = classes == labels[held_out]
        confident = confidence > CONFIDENT
        _, seen_confidence = predict(model, images[seen])
        rows.append([correct.mean(), confident.mean(), (confident & ~correct).mean(), (seen_confidence > CONFIDENT).mean()])
        print(f"fold {index}: held-out accuracy {rows[-1][0]:.4f}, confident {rows[-1][1]:.4f}, "
              f"confident and wrong {rows[-1][2]:.4f}; confident on its training digits {rows[-1][3]:.4f} "
              f"({time.perf_counter() - started:.0f} s)", flush=True)  # fmt: skip
    mean = np.mean(rows, axis=0)
    print(f"mean of {len(rows)} folds ({len(folds[0])} digits each): held-out accuracy {mean[0]:.4f}, "
          f"confident {mean[1]:.4f}, confident and wrong {mean[2]:.4f}; confident on its training digits {mean[3]:.4f}")  # fmt: skip


if __name__ == "__main__":
    main()
