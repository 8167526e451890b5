"""Classifier two-sample test (C2ST), computed exactly as in sbibm.

The C2ST [1]_ trains a classifier to tell samples of ``p`` from samples of
``q`` and reports its held-out accuracy. It is the headline metric of the SBI
benchmark sbibm [2]_; this module reproduces ``sbibm.metrics.c2st`` (same
standardisation, classifier, folds and seeds) without torch, so numbers are
comparable with the published benchmark results.

References
----------
.. [1] Lopez-Paz, D. and Oquab, M. (2017). Revisiting classifier two-sample
   tests. ICLR.
.. [2] Lueckmann, J.-M., Boelts, J., Greenberg, D., Gonçalves, P. and Macke, J.
   (2021). Benchmarking simulation-based inference. AISTATS.
"""

from __future__ import annotations

from typing import Any

import numpy as np

__all__ = ["c2st"]


def _as_2d(samples: Any, name: str) -> np.ndarray:
    """Convert ``(n,)`` or ``(n, d)`` array-likes (numpy, JAX) to float64 ``(n, d)``."""
    arr = np.asarray(samples, dtype=np.float64)
    if arr.ndim == 1:
        arr = arr[:, None]
    if arr.ndim != 2:
        raise ValueError(f"{name} must have shape (n,) or (n, d); got shape {arr.shape}.")
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"{name} contains non-finite values (nan or inf).")
    return arr


def _subsample(arr: np.ndarray, max_samples: int, rng: np.random.Generator) -> np.ndarray:
    if arr.shape[0] <= max_samples:
        return arr
    idx = rng.choice(arr.shape[0], size=max_samples, replace=False)
    return arr[np.sort(idx)]


def c2st(
    samples_p: Any,
    samples_q: Any,
    *,
    seed: int = 1,
    n_folds: int = 5,
    z_score: bool = True,
    max_samples: int | None = None,
) -> float:
    r"""Classifier two-sample test accuracy between two sets of samples.

    A classifier is trained to predict whether a point came from ``samples_p``
    (label 0) or ``samples_q`` (label 1); the score is its accuracy on held-out
    folds, averaged over ``n_folds``-fold cross-validation:

    .. math::

        \mathrm{C2ST}(p, q) = \frac{1}{K} \sum_{k=1}^{K}
            \frac{1}{|F_k|} \sum_{i \in F_k} \mathbb{1}[\hat y_{-k}(z_i) = y_i].

    With equally many points in both sets, a value of **0.5** means the two sets
    are indistinguishable to the classifier (chance level) and **1.0** means
    they are fully separable. Values below 0.5 are chance fluctuations; for
    :math:`N` points in total the binomial standard error at chance is about
    :math:`0.5 / \sqrt{N}`.

    The computation follows ``sbibm.metrics.c2st`` exactly:

    1. if ``z_score``, both sets are standardised with the mean and the
       (``ddof=1``) standard deviation of ``samples_p`` (the *first* set);
    2. classifier ``sklearn.neural_network.MLPClassifier(activation="relu",
       hidden_layer_sizes=(10 * d, 10 * d), max_iter=10000, solver="adam",
       random_state=seed)``;
    3. folds ``KFold(n_splits=n_folds, shuffle=True, random_state=seed)`` and
       ``cross_val_score(..., scoring="accuracy")``; the mean is returned.

    Parameters
    ----------
    samples_p, samples_q : array_like
        Samples of shape ``(n, d)``, or ``(n,)`` which is treated as ``d = 1``.
        NumPy and JAX arrays are accepted. ``samples_p`` is the reference set
        (e.g. reference posterior samples) whose moments are used for
        z-scoring.
    seed : int, default 1
        Seed of the classifier initialisation, of the fold split and of the
        optional subsampling. Same seed, same result.
    n_folds : int, default 5
        Number of cross-validation folds.
    z_score : bool, default True
        Standardise both sets with the moments of ``samples_p``.
    max_samples : int, optional
        If given, each set is subsampled without replacement to at most this
        many points (deterministically from ``seed``) to bound the runtime,
        which grows roughly linearly in the number of points.

    Returns
    -------
    float
        Mean cross-validated accuracy in ``[0, 1]``.

    Raises
    ------
    ValueError
        If the sets have different dimensions or bad shapes, contain
        non-finite values, or either has fewer than ``2 * n_folds`` points.
    ImportError
        If scikit-learn is not installed.

    Examples
    --------
    >>> import numpy as np
    >>> rng = np.random.default_rng(0)
    >>> a = rng.normal(size=(500, 2))
    >>> b = rng.normal(size=(500, 2)) + 10.0
    >>> c2st(a, b) > 0.99
    True
    """
    try:
        from sklearn.model_selection import KFold, cross_val_score
        from sklearn.neural_network import MLPClassifier
    except ImportError as err:  # pragma: no cover - depends on the environment
        raise ImportError(
            "c2st needs scikit-learn, an optional dependency of pymc_sbi: "
            "`pip install scikit-learn` (or `pip install pymc-sbi[test]`)."
        ) from err

    p = _as_2d(samples_p, "samples_p")
    q = _as_2d(samples_q, "samples_q")
    if p.shape[1] != q.shape[1]:
        raise ValueError(
            f"samples_p and samples_q must have the same dimension; got d={p.shape[1]} "
            f"and d={q.shape[1]}."
        )
    if n_folds < 2:
        raise ValueError(f"n_folds must be at least 2; got {n_folds}.")
    if max_samples is not None:
        if max_samples < 1:
            raise ValueError(f"max_samples must be positive; got {max_samples}.")
        rng = np.random.default_rng(seed)
        p = _subsample(p, max_samples, rng)
        q = _subsample(q, max_samples, rng)
    min_n = 2 * n_folds
    if p.shape[0] < min_n or q.shape[0] < min_n:
        raise ValueError(
            f"c2st needs at least 2 * n_folds = {min_n} samples in each set; got "
            f"{p.shape[0]} and {q.shape[0]}."
        )

    if z_score:
        mean = p.mean(axis=0)
        std = p.std(axis=0, ddof=1)  # torch.std default (unbiased), as in sbibm
        std = np.where(std > 0, std, 1.0)  # constant coordinate: only centre it
        p = (p - mean) / std
        q = (q - mean) / std

    dim = p.shape[1]
    clf = MLPClassifier(
        activation="relu",
        hidden_layer_sizes=(10 * dim, 10 * dim),
        max_iter=10000,
        solver="adam",
        random_state=seed,
    )
    data = np.concatenate([p, q], axis=0)
    target = np.concatenate([np.zeros(p.shape[0]), np.ones(q.shape[0])])
    folds = KFold(n_splits=n_folds, shuffle=True, random_state=seed)
    scores = cross_val_score(clf, data, target, cv=folds, scoring="accuracy")
    return float(np.mean(scores))
