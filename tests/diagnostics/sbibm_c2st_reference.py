"""Compute the expected value of ``test_matches_sbibm_reference_value`` (run once, by hand).

sbibm (``sbibm/metrics/c2st.py``, commit 1a45fa7) needs torch, which pymc_sbi
does not install. This script repeats sbibm's computation step by step with
numpy standing in for torch, in float32 as sbibm's tensors are:

1. ``X_mean = torch.mean(X, 0)``, ``X_std = torch.std(X, 0)`` (unbiased, ddof=1),
   ``X = (X - X_mean) / X_std``, ``Y = (Y - X_mean) / X_std`` (float32);
2. ``MLPClassifier(activation="relu", hidden_layer_sizes=(10 * ndim, 10 * ndim),
   max_iter=10000, solver="adam", random_state=seed)`` on the float32 arrays;
3. ``KFold(n_splits=5, shuffle=True, random_state=seed)``,
   ``cross_val_score(clf, data, target, cv=shuffle, scoring="accuracy")``, mean,
   cast to float32.

Run ``python tests/diagnostics/sbibm_c2st_reference.py``; with scikit-learn 1.9.1
it printed 0.574999988079071, hard-coded in test_c2st.py. ``reference_data``
is shared with the test so both see the same samples.
"""

import numpy as np


def reference_data() -> tuple[np.ndarray, np.ndarray]:
    """1000 draws of N(0, I_2) and 1000 of N((0.5, 0), I_2), fixed seed, float32."""
    rng = np.random.default_rng(20240601)
    x = rng.standard_normal((1000, 2)).astype(np.float32)
    y = (rng.standard_normal((1000, 2)) + np.array([0.5, 0.0])).astype(np.float32)
    return x, y


def sbibm_c2st_numpy(x: np.ndarray, y: np.ndarray, seed: int = 1, n_folds: int = 5) -> float:
    """sbibm's ``c2st`` with numpy float32 in place of torch tensors."""
    from sklearn.model_selection import KFold, cross_val_score
    from sklearn.neural_network import MLPClassifier

    x = np.asarray(x, np.float32)
    y = np.asarray(y, np.float32)
    x_mean = np.mean(x, axis=0, dtype=np.float32)
    x_std = np.std(x, axis=0, ddof=1, dtype=np.float32)
    x = (x - x_mean) / x_std
    y = (y - x_mean) / x_std
    ndim = x.shape[1]
    clf = MLPClassifier(
        activation="relu",
        hidden_layer_sizes=(10 * ndim, 10 * ndim),
        max_iter=10000,
        solver="adam",
        random_state=seed,
    )
    data = np.concatenate((x, y))
    target = np.concatenate((np.zeros((x.shape[0],)), np.ones((y.shape[0],))))
    shuffle = KFold(n_splits=n_folds, shuffle=True, random_state=seed)
    scores = cross_val_score(clf, data, target, cv=shuffle, scoring="accuracy")
    return float(np.asarray(np.mean(scores)).astype(np.float32))


if __name__ == "__main__":
    print(repr(sbibm_c2st_numpy(*reference_data())))
