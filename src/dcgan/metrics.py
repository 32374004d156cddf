"""Sample-quality numbers: digit class coverage, Stacked-MNIST modes, and the FID/KID formulas.

Digits: each sample's class and confidence come from `classifier.py`.
    classes_present      classes with at least one sample (out of 10)
    confident            fraction classified with softmax confidence > 0.9
    kl_uniform           KL(class histogram || uniform over 10), in nats; 0 is perfectly even

Stacked-MNIST (Metz et al. 2017; VEEGAN; PacGAN): three digits stacked as R, G, B make
1,000 modes; each channel is classified separately and the mode is 100 r + 10 g + b.
    modes                modes with at least one sample (out of 1000)
    kl_uniform           KL(mode histogram || uniform over 1000)
    confident            fraction of channels classified with confidence > 0.9

FID (Heusel et al. 2017) and KID (Binkowski et al. 2018) on feature vectors:
    FID = |mu1 - mu2|^2 + Tr(S1 + S2 - 2 (S1 S2)^(1/2))
    KID = unbiased MMD^2 with the kernel k(x, y) = (x.y / d + 1)^3, averaged over subsets
"""

from __future__ import annotations

import warnings
from typing import Optional

import numpy as np

CONFIDENT = 0.9  # softmax confidence above which a sample counts as a clearly drawn digit


def kl_to_uniform(counts: np.ndarray) -> float:
    """KL(p || uniform) in nats for a histogram of counts over len(counts) bins."""
    p = counts / counts.sum()
    nonzero = p > 0
    return float(np.sum(p[nonzero] * np.log(p[nonzero] * len(counts))))


def digit_stats(classes: np.ndarray, confidences: np.ndarray) -> dict:
    counts = np.bincount(classes, minlength=10)
    return {
        "classes_present": int((counts > 0).sum()),
        "confident": float((confidences > CONFIDENT).mean()),
        "kl_uniform": kl_to_uniform(counts),
        "class_histogram": counts.tolist(),
    }


def stacked_stats(channel_classes: np.ndarray, channel_confidences: np.ndarray) -> dict:
    """channel_classes, channel_confidences: (N, 3), the R, G, B digit of each sample."""
    modes = channel_classes[:, 0] * 100 + channel_classes[:, 1] * 10 + channel_classes[:, 2]
    counts = np.bincount(modes, minlength=1000)
    return {
        "modes": int((counts > 0).sum()),
        "kl_uniform": kl_to_uniform(counts),
        "confident": float((channel_confidences > CONFIDENT).mean()),
    }


def feature_statistics(features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    features = np.asarray(features, dtype=np.float64)
    return features.mean(axis=0), np.cov(features, rowvar=False)


def frechet_distance(mu1: np.ndarray, sigma1: np.ndarray, mu2: np.ndarray, sigma2: np.ndarray, eps: float = 1e-6) -> float:
    """FID between two Gaussians, as pytorch-fid computes it (with its fix for a singular product)."""
    from scipy import linalg  # here, not at the top: importing scipy.linalg costs ~0.2 s, and `dcgan train` imports this module

    diff = mu1 - mu2
    covmean = linalg.sqrtm(sigma1.dot(sigma2))
    if not np.isfinite(covmean).all():
        offset = np.eye(sigma1.shape[0]) * eps  # regularise a product too close to singular
        covmean = linalg.sqrtm((sigma1 + offset).dot(sigma2 + offset))
    if np.iscomplexobj(covmean):
        covmean = covmean.real  # numerical error leaves tiny imaginary parts
    return float(diff.dot(diff) + np.trace(sigma1) + np.trace(sigma2) - 2 * np.trace(covmean))


def frechet_distance_of_features(features1: np.ndarray, features2: np.ndarray) -> float:
    """FID of two feature sets (N1, d), (N2, d): `frechet_distance` of their statistics, fast for small N.

    With fewer samples than dimensions (a few hundred against Inception's 2048) both covariances
    and the mean difference lie in the span of the centred features, of dimension k <= N1 + N2 - 1.
    Every term of the formula is unchanged when written in an orthonormal basis of that span
    (S = Q S' Q^T, so Tr S = Tr S' and (S1 S2)^(1/2) = Q (S1' S2')^(1/2) Q^T), so the matrix square
    root is taken of a k x k matrix instead of a d x d one (2048 x 2048 takes a minute on 2 CPU cores).
    """
    from scipy import linalg  # for its warning class; imported here for the same reason as in frechet_distance

    mu1, sigma1 = feature_statistics(features1)
    mu2, sigma2 = feature_statistics(features2)
    spanning = np.vstack([np.asarray(features1, np.float64) - mu1, np.asarray(features2, np.float64) - mu2, mu1 - mu2])
    if len(spanning) < len(mu1):
        basis, _ = np.linalg.qr(spanning.T)  # (d, k) orthonormal columns whose span holds every term
        project = lambda sigma: basis.T @ sigma @ basis  # noqa: E731
        with warnings.catch_warnings():  # both covariances have rank < k by construction: sqrtm's warning says nothing
            warnings.simplefilter("ignore", linalg.LinAlgWarning)
            return frechet_distance(basis.T @ mu1, project(sigma1), basis.T @ mu2, project(sigma2))
    return frechet_distance(mu1, sigma1, mu2, sigma2)


def kernel_inception_distance(
    features1: np.ndarray, features2: np.ndarray, subsets: int = 100, subset_size: int = 1000, seed: int = 0
) -> tuple[float, float]:
    """KID: mean and standard deviation over random subsets of the unbiased polynomial-kernel MMD^2."""
    rng = np.random.default_rng(seed)
    f1, f2 = np.asarray(features1, np.float64), np.asarray(features2, np.float64)
    m = min(subset_size, len(f1), len(f2))
    dim = f1.shape[1]
    estimates = []
    for _ in range(subsets):
        x = f1[rng.choice(len(f1), m, replace=False)]
        y = f2[rng.choice(len(f2), m, replace=False)]
        k_xx = (x @ x.T / dim + 1) ** 3
        k_yy = (y @ y.T / dim + 1) ** 3
        k_xy = (x @ y.T / dim + 1) ** 3
        # unbiased: the diagonals (each sample with itself) are left out of the within-set terms
        within = (k_xx.sum() - np.trace(k_xx) + k_yy.sum() - np.trace(k_yy)) / (m * (m - 1))
        estimates.append(within - 2 * k_xy.mean())
    return float(np.mean(estimates)), float(np.std(estimates))


def summary_line(stats: dict, keys: Optional[tuple] = None) -> str:
    keys = keys or tuple(k for k, v in stats.items() if isinstance(v, (int, float)))
    return ", ".join(f"{k} {stats[k]:.4g}" if isinstance(stats[k], float) else f"{k} {stats[k]}" for k in keys)
