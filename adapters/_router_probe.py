"""The router's probe: a ridge classifier over the adapters' text vectors.

Similarity to examples asks "which adapter has a text like this one?". Adapters in
neighbouring domains share words and sentence forms, so that question cannot tell them
apart. A linear classifier fitted on all adapters at once (one-vs-rest ridge regression,
with the background's general requests as one more class) asks "which directions separate
this adapter from the others?" instead, and it down-weights what every adapter shares.

Ridge regression on one-hot targets has a closed form that stays cheap at any number of
adapters. With ``X`` the weighted rows (each with a constant 1 appended) and ``S_a`` the
weighted sum of adapter ``a``'s rows, the score of adapter ``a`` for a query ``q`` is
``(A^-1 q) . S_a`` with ``A = X^T X + lambda I``: one (d+1) x (d+1) product per query, then
one dot product per candidate adapter. Every adapter's rows together weigh
``ADAPTER_WEIGHT``, whatever its example count, so adapters with many examples do not
crowd out the rest.
"""

from __future__ import annotations

import numpy as np

from trellis.adapters._router_policies import matvec

__all__ = ["ADAPTER_WEIGHT", "RidgeProbe"]

ADAPTER_WEIGHT = 40.0
"""Total weight of one adapter's rows in the fit (a description plus 39 examples at 1 each)."""

_CHUNK_ROWS = 65_536  # rows added to the Gram matrix at once while fitting


class RidgeProbe:
    """One-vs-rest ridge scores of every adapter, and of the background as its own class."""

    def __init__(
        self,
        rows: np.ndarray,
        starts: np.ndarray,
        background: np.ndarray,
        *,
        ridge: float,
        background_weight: float,
    ) -> None:
        """Fit on ``rows`` grouped by adapter (``starts``: n+1 offsets) and the background.

        ``ridge`` is lambda; ``background_weight`` is the weight of each background row.
        """
        counts = np.diff(starts)
        if len(counts) and int(counts.min()) < 1:
            raise ValueError("every adapter needs at least one embedded text to fit the probe")
        dim = rows.shape[1]
        weights = np.repeat(ADAPTER_WEIGHT / counts, counts).astype(np.float64)
        gram = np.zeros((dim + 1, dim + 1), dtype=np.float64)
        for start in range(0, len(rows), _CHUNK_ROWS):
            gram += _weighted_gram(
                rows[start : start + _CHUNK_ROWS], weights[start : start + _CHUNK_ROWS]
            )
        self.has_background = len(background) > 0
        if self.has_background:
            gram += _weighted_gram(background, np.full(len(background), background_weight))
        gram[np.diag_indices(dim + 1)] += ridge
        self.inverse = np.ascontiguousarray(np.linalg.inv(gram), dtype=np.float32)
        # S_a: the weighted sum of each adapter's rows, with its total weight as the last entry.
        sums = np.add.reduceat(rows, starts[:-1], axis=0) if len(counts) else rows[:0]
        targets = np.empty((len(counts), dim + 1), dtype=np.float32)
        targets[:, :dim] = sums * (ADAPTER_WEIGHT / counts)[:, None]
        targets[:, dim] = ADAPTER_WEIGHT
        self.targets = targets
        self.background_target = np.zeros(dim + 1, dtype=np.float32)
        if self.has_background:
            self.background_target[:dim] = background.sum(axis=0) * background_weight
            self.background_target[dim] = len(background) * background_weight

    def transform(self, query: np.ndarray) -> np.ndarray:
        """``A^-1 [q, 1]``: computed once per query, shared by every adapter's score."""
        return matvec(self.inverse, np.append(query, np.float32(1.0)).astype(np.float32))

    def scores(self, transformed: np.ndarray, positions: np.ndarray | None = None) -> np.ndarray:
        """The probe's scores of the given adapters (all when None) for a transformed query."""
        targets = self.targets if positions is None else self.targets[positions]
        return np.asarray(matvec(targets, transformed), dtype=np.float32)

    def background(self, transformed: np.ndarray) -> float | None:
        """The background class's score (None without background rows)."""
        if not self.has_background:
            return None
        return float(self.background_target @ transformed)


def _weighted_gram(rows: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """``[rows, 1]^T diag(weights) [rows, 1]``: a float32 product, returned as float64."""
    block = np.hstack([rows, np.ones((len(rows), 1), dtype=np.float32)]).astype(np.float32)
    return (block.T @ (block * weights[:, None].astype(np.float32))).astype(np.float64)
