"""Near-duplicate removal on normalised embeddings, blockwise, with matrix products instead of pair loops.

Rows are visited in order; a row is a duplicate when its cosine to an earlier *kept* row exceeds the threshold
(greedy, like keeping the first of each cluster). Each block of rows is compared with all earlier rows in one
matrix product; earlier blocks are already final, so only rows that have a candidate inside their own block need
the sequential resolution, and that loop runs over candidate rows only.
"""

from __future__ import annotations

import numpy as np


def near_duplicates(vectors: np.ndarray, threshold: float, block_rows: int = 1024) -> np.ndarray:
    """For each row, the index of the earlier kept row it duplicates, or -1 if the row is kept.

    ``vectors`` must be L2-normalised (cosine = dot product). Memory is ``block_rows x n`` floats.
    """
    vectors = np.ascontiguousarray(vectors, dtype=np.float32)
    n = len(vectors)
    duplicate_of = np.full(n, -1, dtype=np.int64)
    kept = np.ones(n, dtype=bool)
    for start in range(0, n, block_rows):
        stop = min(start + block_rows, n)
        block = vectors[start:stop]
        # Earlier blocks are final: compare with their kept rows only.
        kept_before = np.flatnonzero(kept[:start])
        if kept_before.size:
            sims = block @ vectors[kept_before].T
            best = sims.argmax(axis=1)
            is_dup = sims[np.arange(len(block)), best] > threshold
            duplicate_of[start:stop][is_dup] = kept_before[best[is_dup]]
            kept[start:stop] = ~is_dup
        # Inside the block, resolve in order, only for rows that have an earlier in-block hit.
        square = block @ block.T
        square[np.triu_indices(len(block))] = -np.inf
        hits = square > threshold
        for r in np.flatnonzero(hits.any(axis=1) & kept[start:stop]):
            candidates = np.flatnonzero(hits[r, :r] & kept[start:start + r])
            if candidates.size:
                best_in_block = candidates[square[r, candidates].argmax()]
                duplicate_of[start + r] = start + best_in_block
                kept[start + r] = False
    return duplicate_of
