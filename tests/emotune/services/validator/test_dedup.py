"""Blockwise near-duplicate removal gives exactly the greedy "keep the first of each cluster" result."""

import numpy as np
import pytest

from emotune.services.validator.dedup import near_duplicates


def greedy_reference(vectors: np.ndarray, threshold: float) -> np.ndarray:
    """The obvious O(n^2) loop, as the specification."""
    kept: list[int] = []
    out = np.full(len(vectors), -1)
    for i, v in enumerate(vectors):
        if kept:
            sims = vectors[kept] @ v
            best = int(sims.argmax())
            if sims[best] > threshold:
                out[i] = kept[best]
                continue
        kept.append(i)
    return out


def unit(rows: np.ndarray) -> np.ndarray:
    return (rows / np.linalg.norm(rows, axis=1, keepdims=True)).astype(np.float32)


@pytest.mark.parametrize("block_rows", [1, 7, 64, 5000])
def test_matches_the_greedy_loop_with_planted_duplicates(block_rows):
    rng = np.random.default_rng(1)
    base = unit(rng.standard_normal((300, 32)))
    copies = unit(base[rng.integers(0, 300, 200)] + 0.02 * rng.standard_normal((200, 32)))
    vectors = np.concatenate([base, copies])[rng.permutation(500)]
    expected = greedy_reference(vectors, 0.95)
    assert (expected >= 0).sum() >= 150  # the planted copies are found
    assert np.array_equal(near_duplicates(vectors, 0.95, block_rows), expected)


def test_a_chain_keeps_the_first_and_the_third():
    # a~b and b~c but not a~c: greedy keeps a, drops b (duplicate of a), keeps c (its only match b was dropped).
    a, b, c = np.array([1.0, 0.0]), np.array([np.cos(0.3), np.sin(0.3)]), np.array([np.cos(0.6), np.sin(0.6)])
    vectors = unit(np.stack([a, b, c]))
    threshold = float(np.cos(0.45))
    assert near_duplicates(vectors, threshold, block_rows=2).tolist() == [-1, 0, -1]
    assert near_duplicates(vectors, threshold, block_rows=1).tolist() == [-1, 0, -1]


def test_empty_single_and_exact_copies():
    assert near_duplicates(np.zeros((0, 4), dtype=np.float32), 0.9).shape == (0,)
    v = unit(np.array([[1.0, 2.0, 3.0]]))
    assert near_duplicates(v, 0.9).tolist() == [-1]
    assert near_duplicates(np.repeat(v, 4, axis=0), 0.99).tolist() == [-1, 0, 0, 0]
