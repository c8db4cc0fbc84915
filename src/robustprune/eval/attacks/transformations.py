"""Transformations: candidate texts that differ from the current one in one word.

A transformation is called with the current text and the word indices it may change, and returns one
:class:`AttackedText` per candidate (each with ``newly_modified == {index}``), in a deterministic order.
Word swaps: embedding neighbours, WordNet synonyms, masked-LM predictions (BERT-Attack) and character
"bugs" (insert, delete, neighbour swap, substitute, homoglyph).

Random character edits come in two modes. ``"textattack"``: TextAttack 0.3.11's edits, drawn as it draws
them (a position from numpy's legacy generator, a letter from Python's) from :class:`EditDraws`, which the
attack restarts at every example from ``seed + example index``: a TextAttack run that re-seeds both
generators the same way per example makes the same edits. ``"paper"``: each edit is drawn from a generator
seeded by ``(seed, transformation, word)``, so a word always gets the same bug wherever it appears.
"""

from __future__ import annotations

import random
import string
from collections import OrderedDict
from collections.abc import Callable, Sequence
from typing import Any, Protocol

import numpy as np
import torch

from robustprune.eval.attacks.text import AttackedText, check_mode, textattack_words
from robustprune.eval.words import is_word, recover_case


class Transformation(Protocol):
    """Maps ``(text, indices)`` to candidate texts, each changing one of ``indices``."""

    def __call__(self, text: AttackedText, indices: Sequence[int]) -> list[AttackedText]: ...


class WordSwap:
    """Base of swaps that only look at the word itself: subclasses implement :meth:`replacements`."""

    def replacements(self, word: str) -> list[str]:
        raise NotImplementedError

    def __call__(self, text: AttackedText, indices: Sequence[int]) -> list[AttackedText]:
        out = []
        for i in indices:
            word = text.words[i]
            for new in self.replacements(word):
                if new and new != word:
                    out.append(text.replace_word(i, new))
        return out


class EmbeddingSwap(WordSwap):
    """The ``max_candidates`` nearest neighbours of the word in a word-vector table (TextFooler, TextBugger).

    Args:
        vectors: anything with ``nearest(word, k, min_cosine) -> [(word, cos)]`` and ``__contains__``;
            None loads GloVe 6B 50-d (:func:`robustprune.eval.word_vectors.load_glove`).
        max_candidates: neighbours per word.
        min_cosine: passed to the lookup; the recipes leave it at -1 and filter with
            :class:`~robustprune.eval.attacks.constraints.WordEmbeddingDistance`, as TextAttack does.
        mode: ``"paper"``: the ``max_candidates`` nearest entries, less those that are no word
            (:func:`robustprune.eval.words.is_word`). ``"textattack"``: the ``max_candidates`` nearest entries
            that TextAttack reads as exactly one word (its nearest-neighbour table over a vocabulary of words,
            as the counter-fitted vectors have), none dropped afterwards, each in the replaced word's case.
    """

    def __init__(self, vectors: Any = None, max_candidates: int = 50, min_cosine: float = -1.0, *,
                 mode: str = "paper") -> None:
        self.mode = check_mode(mode)
        if not isinstance(max_candidates, int) or max_candidates < 1:
            raise ValueError(f"max_candidates must be a positive int, got {max_candidates!r}")
        if vectors is None:
            from robustprune.eval.word_vectors import load_glove

            vectors = load_glove()
        self.vectors = vectors
        self.max_candidates = max_candidates
        self.min_cosine = min_cosine
        self._cache: dict[str, list[str]] = {}

    def _one_word_neighbours(self, key: str) -> list[str]:
        """The ``max_candidates`` nearest entries that are exactly one TextAttack word."""
        ask = 2 * self.max_candidates + 10
        while True:
            found = self.vectors.nearest(key, ask, self.min_cosine)
            words = [w for w, _ in found if textattack_words(w) == [w]]
            if len(words) >= self.max_candidates or len(found) < ask:
                return words[: self.max_candidates]
            ask *= 4

    def replacements(self, word: str) -> list[str]:
        key = word.lower()
        if key not in self._cache:
            if key not in self.vectors:
                self._cache[key] = []
            elif self.mode == "textattack":
                self._cache[key] = self._one_word_neighbours(key)
            else:
                found = self.vectors.nearest(key, self.max_candidates, self.min_cosine)
                self._cache[key] = [w for w, _ in found if w != key and is_word(w)]
        return [recover_case(w, word) for w in self._cache[key]]


class WordNetSwap(WordSwap):
    """Single-word WordNet synonyms of the word (PWWS).

    Args:
        synonyms: ``"paper"`` mode's source of lowercased synonyms (default
            :func:`robustprune.eval.wordnet.synonyms`); they take the case of the word they replace.
        mode: ``"textattack"``: TextAttack's candidates: every lemma name of the word's synsets as
            WordNet spells it (capitals kept), except the word itself (case-sensitive), multi-word lemmas
            and names that are not one word by TextAttack's rule. ``"paper"``: the synonyms in WordNet's
            order, recased.
    """

    def __init__(self, synonyms: Callable[[str], list[str]] | None = None, *, mode: str = "paper") -> None:
        self.mode = check_mode(mode)
        if self.mode == "textattack" and synonyms is not None:
            raise ValueError("synonyms= replaces the paper mode's synonym source; mode='textattack' reads "
                             "WordNet's lemma names itself")
        if synonyms is None:
            from robustprune.eval.wordnet import synonyms
        self.synonyms = synonyms

    def prepare(self) -> None:
        """Load WordNet now (a one-off ~2-5 s) rather than inside a timed attack."""
        from robustprune.eval.wordnet import wordnet

        wordnet().synsets("good")

    def replacements(self, word: str) -> list[str]:
        if self.mode == "textattack":
            from robustprune.eval.wordnet import lemma_names

            names = (n for n in lemma_names(word) if n != word and "_" not in n and len(textattack_words(n)) == 1)
            return list(dict.fromkeys(names))
        key = word.lower()
        return [recover_case(s, word) for s in self.synonyms(key) if s != key and is_word(s)]


class EditDraws:
    """The random source of ``"textattack"``-mode character edits: numpy's legacy generator for positions
    and Python's for letters, as TextAttack draws them (``np.random.randint``, ``random.choice``).

    :meth:`restart` begins an example: both generators are seeded with ``seed + example`` (mod 2^32), so
    each example's edits do not depend on which examples ran before (shards of a dataset draw the same).
    """

    def __init__(self, seed: int = 0) -> None:
        if not isinstance(seed, int) or isinstance(seed, bool):
            raise TypeError(f"seed must be an int, got {seed!r}")
        self.seed = seed
        self.restart(0)

    def restart(self, example: int) -> None:
        example_seed = (self.seed + example) % 2**32
        self.positions = np.random.RandomState(example_seed)
        self.letters = random.Random(example_seed)

    def state(self) -> tuple[np.random.RandomState, random.Random]:
        """The current example's generators (the attack keeps one pair per example in flight)."""
        return self.positions, self.letters

    def use(self, state: tuple[np.random.RandomState, random.Random]) -> None:
        """Draw from an example's generators again (they continue where that example left them)."""
        self.positions, self.letters = state


class _CharacterBug(WordSwap):
    """Common parts of the character edits: eligible positions, one random or all, seeded randomness.

    Args:
        random_one: one edit at a random eligible position (TextAttack's ``random_one``), else one
            candidate per eligible position.
        skip_first_char, skip_last_char: never edit the first / last character.
        letters: the alphabet inserted or substituted.
        seed: ``"paper"`` mode: with the word, seeds the positions and letters drawn.
        draws: ``"textattack"`` mode: the shared :class:`EditDraws` (required in that mode).
        mode: ``"textattack"`` (TextAttack's positions: never after the last character, no-op edits
            possible and dropped) or ``"paper"`` (only edits that change the word).
    """

    def __init__(
        self,
        *,
        random_one: bool = True,
        skip_first_char: bool = False,
        skip_last_char: bool = False,
        letters: str = string.ascii_letters,
        seed: int = 0,
        draws: EditDraws | None = None,
        mode: str = "paper",
    ) -> None:
        if not letters:
            raise ValueError("letters must be a non-empty string")
        self.mode = check_mode(mode)
        if self.mode == "textattack" and draws is None:
            raise ValueError("mode='textattack' draws its edits from draws= (an EditDraws the attack restarts "
                             "per example)")
        self.random_one = random_one
        self.skip_first_char = skip_first_char
        self.skip_last_char = skip_last_char
        self.letters = letters
        self.seed = seed
        self.draws = draws

    def _rng(self, word: str) -> random.Random:
        return random.Random(f"{self.seed}|{type(self).__name__}|{word}")

    def _char_range(self, word: str) -> range:
        """Indices of characters that may be edited."""
        return range(1 if self.skip_first_char else 0, len(word) - (1 if self.skip_last_char else 0))

    def _positions(self, word: str) -> Sequence[int]:
        return self._char_range(word)

    def _textattack_range(self, word: str) -> range:
        """TextAttack's positions: from 0 (1 when skipping the first character) to the end, less one
        when skipping the last character."""
        return range(1 if self.skip_first_char else 0, len(word) - (1 if self.skip_last_char else 0))

    def _edit(self, word: str, position: int, rng: random.Random) -> str:
        raise NotImplementedError

    def replacements(self, word: str) -> list[str]:
        if len(word) <= 1:
            return []
        if self.mode == "textattack":
            span = self._textattack_range(word)
            if not span:
                return []
            if self.random_one:
                span = [int(self.draws.positions.randint(span.start, span.stop))]
            return [self._edit(word, p, self.draws.letters) for p in span]
        positions = list(self._positions(word))
        if not positions:
            return []
        rng = self._rng(word)
        if self.random_one:
            positions = [rng.choice(positions)]
        return [self._edit(word, p, rng) for p in positions]


class CharacterInsert(_CharacterBug):
    """Insert a letter (TextBugger: a space) into the word; positions are gaps between characters."""

    def _positions(self, word: str) -> Sequence[int]:
        return range(1 if self.skip_first_char else 0, len(word) + (0 if self.skip_last_char else 1))

    def _edit(self, word: str, position: int, rng: random.Random) -> str:
        return word[:position] + rng.choice(self.letters) + word[position:]


class CharacterDelete(_CharacterBug):
    """Delete one character."""

    def _edit(self, word: str, position: int, rng: random.Random) -> str:
        return word[:position] + word[position + 1 :]


class NeighbourSwap(_CharacterBug):
    """Swap a character with the next one (``"paper"``: both must be editable and differ)."""

    def _textattack_range(self, word: str) -> range:
        return range(1 if self.skip_first_char else 0, len(word) - (2 if self.skip_last_char else 1))

    def _positions(self, word: str) -> Sequence[int]:
        chars = self._char_range(word)
        return [i for i in chars if i + 1 in chars and word[i] != word[i + 1]]

    def _edit(self, word: str, position: int, rng: random.Random) -> str:
        return word[:position] + word[position + 1] + word[position] + word[position + 2 :]


class CharacterSubstitute(_CharacterBug):
    """Replace one character by a random letter (``"paper"``: a different one; ``"textattack"``: any,
    at any position, as TextAttack)."""

    def _textattack_range(self, word: str) -> range:
        return range(len(word))

    def _edit(self, word: str, position: int, rng: random.Random) -> str:
        if self.mode == "textattack":
            return word[:position] + rng.choice(self.letters) + word[position + 1 :]
        choices = [c for c in self.letters if c != word[position]] or list(self.letters)
        return word[:position] + rng.choice(choices) + word[position + 1 :]


# Visually confusable Unicode letters (Cyrillic, Greek, Armenian, Latin extensions). All are word
# characters, so a homoglyph-bugged word is still one word.
HOMOGLYPHS: dict[str, str] = {
    "a": "\u0430",
    "b": "\u044c",
    "c": "\u0441",
    "d": "\u0501",
    "e": "\u0435",
    "g": "\u0261",
    "h": "\u04bb",
    "i": "\u0456",
    "j": "\u0458",
    "k": "\u03ba",
    "l": "\u04cf",
    "n": "\u0578",
    "o": "\u043e",
    "p": "\u0440",
    "q": "\u051b",
    "s": "\u0455",
    "u": "\u03c5",
    "v": "\u03bd",
    "w": "\u051d",
    "x": "\u0445",
    "y": "\u0443",
    "z": "\u1d22",
    "A": "\u0410",
    "B": "\u0412",
    "C": "\u0421",
    "E": "\u0415",
    "H": "\u041d",
    "I": "\u0406",
    "K": "\u041a",
    "M": "\u041c",
    "O": "\u041e",
    "P": "\u0420",
    "T": "\u0422",
    "X": "\u0425",
}


# TextAttack 0.3.11's homoglyph table (``WordSwapHomoglyphSwap.homos`` in
# textattack/transformations/word_swaps/word_swap_homoglyph_swap.py; TextAttack is MIT-licensed), kept as
# data so that "textattack"-mode TextBugger makes TextAttack's candidates. Digits, "-" and "'" have look-alikes
# too, and "1" -> "l", "0" -> "O" are plain ASCII.
TEXTATTACK_HOMOGLYPHS: dict[str, str] = {
    "-": "\u02d7", "9": "\u09ed", "8": "\u0222", "7": "\U0001d7d5", "6": "\u0431", "5": "\u01bc",
    "4": "\u13ce", "3": "\u01b7", "2": "\u14bf", "1": "l", "0": "O", "'": "`", "a": "\u0251",
    "b": "\u042c", "c": "\u03f2", "d": "\u0501", "e": "\u0435", "f": "\U0001d68f", "g": "\u0261",
    "h": "\u0570", "i": "\u0456", "j": "\u03f3", "k": "\U0001d48c", "l": "\u217c", "m": "\uff4d",
    "n": "\u0578", "o": "\u043e", "p": "\u0440", "q": "\u051b", "r": "\u2c85", "s": "\u0455",
    "t": "\U0001d69d", "u": "\u057d", "v": "\u0475", "w": "\u051d", "x": "\u00d7", "y": "\u0443",
    "z": "\u1d22",
}


class HomoglyphSwap(WordSwap):
    """Replace one character by a look-alike; one candidate per replaceable position (TextBugger).

    Args:
        table: character -> look-alike; None: :data:`HOMOGLYPHS` (``"paper"``) or TextAttack's own table
            :data:`TEXTATTACK_HOMOGLYPHS` (``"textattack"``).
        mode: ``"textattack"`` or ``"paper"``.
    """

    def __init__(self, table: dict[str, str] | None = None, *, mode: str = "paper") -> None:
        self.mode = check_mode(mode)
        default = TEXTATTACK_HOMOGLYPHS if self.mode == "textattack" else HOMOGLYPHS
        self.table = default if table is None else dict(table)

    def replacements(self, word: str) -> list[str]:
        return [word[:i] + self.table[c] + word[i + 1 :] for i, c in enumerate(word) if c in self.table]


class CompositeTransformation:
    """The candidates of several transformations, concatenated in order, duplicates dropped: the same words
    (``"paper"`` texts) or the same text (``"textattack"`` texts, as TextAttack's ``AttackedText`` equality)."""

    def __init__(self, parts: Sequence[Transformation]) -> None:
        if not parts:
            raise ValueError("parts must name at least one transformation")
        self.parts = list(parts)

    def __call__(self, text: AttackedText, indices: Sequence[int]) -> list[AttackedText]:
        seen: dict[Any, AttackedText] = {}
        for part in self.parts:
            for candidate in part(text, indices):
                seen.setdefault(candidate.text if candidate.mode == "textattack" else candidate.words, candidate)
        return list(seen.values())


class MaskedLMSwap:
    """Masked-LM candidates as BERT-Attack makes them, from any Hugging Face masked LM.

    The LM reads the current (unmasked) text once (cached per text). For a word that is one sub-token,
    the candidates are the LM's top ``max_candidates`` tokens at its position, whole words only. For a
    word of several sub-tokens, each position's top ``max_candidates`` tokens are combined and the
    ``max_candidates`` combinations of lowest perplexity (mean cross-entropy) are kept; a beam search
    finds exactly those without enumerating every combination.

    Args:
        model: a ``*ForMaskedLM`` module returning ``.logits`` of shape ``[1, seq, vocab]``.
        tokenizer: its fast tokenizer (character offsets locate each word's sub-tokens).
        max_candidates: candidates per word (BERT-Attack: 48).
        max_length: the LM sees at most this many tokens; words beyond it get no candidates.
        cache_size: texts whose LM predictions are kept.
    """

    def __init__(
        self,
        model: torch.nn.Module,
        tokenizer: Any,
        *,
        max_candidates: int = 48,
        max_length: int = 512,
        cache_size: int = 256,
    ) -> None:
        if not getattr(tokenizer, "is_fast", False):
            raise ValueError(
                "tokenizer must be a fast (Rust) Hugging Face tokenizer: character offsets are "
                "needed to find each word's sub-tokens"
            )
        if not isinstance(max_candidates, int) or max_candidates < 1:
            raise ValueError(f"max_candidates must be a positive int, got {max_candidates!r}")
        self.model = model
        self.tokenizer = tokenizer
        self.max_candidates = max_candidates
        self.max_length = max_length
        self.cache_size = cache_size
        self._special = set(tokenizer.all_special_ids)
        self._cache: OrderedDict[str, tuple[torch.Tensor, torch.Tensor, list[tuple[int, int]]]] = (
            OrderedDict()
        )

    @torch.no_grad()
    def _predict(self, text: str) -> tuple[torch.Tensor, torch.Tensor, list[tuple[int, int]]]:
        """(top log-probs [seq, k], top ids [seq, k], token character offsets) for ``text``."""
        if text in self._cache:
            self._cache.move_to_end(text)
            return self._cache[text]
        enc = self.tokenizer(
            text,
            truncation=True,
            max_length=self.max_length,
            return_offsets_mapping=True,
            return_tensors="pt",
        )
        offsets = [tuple(o) for o in enc.pop("offset_mapping")[0].tolist()]
        device = next(self.model.parameters()).device
        was_training = self.model.training
        self.model.eval()
        try:
            logits = self.model(**{k: v.to(device) for k, v in enc.items()}).logits[0].float().cpu()
        finally:
            self.model.train(was_training)
        top = logits.log_softmax(dim=-1).topk(min(self.max_candidates, logits.shape[-1]), dim=-1)
        entry = (top.values, top.indices, offsets)
        self._cache[text] = entry
        while len(self._cache) > self.cache_size:
            self._cache.popitem(last=False)
        return entry

    def _word_spans(self, text: AttackedText) -> list[tuple[int, int]]:
        spans, pos = [], len(text.separators[0])
        for word, sep in zip(text.words, text.separators[1:]):
            spans.append((pos, pos + len(word)))
            pos += len(word) + len(sep)
        return spans

    def _candidates(self, log_probs: torch.Tensor, ids: torch.Tensor, positions: list[int]) -> list[str]:
        if len(positions) == 1:
            tokens = self.tokenizer.convert_ids_to_tokens(
                [i for i in ids[positions[0]].tolist() if i not in self._special]
            )
            return [t for t in tokens if not t.startswith("##") and is_word(t)]
        # Beam search over sub-token combinations: the sum of log-probs is separable by position, so
        # keeping the best k prefixes at every step yields exactly the k best full combinations.
        beam: list[tuple[float, tuple[int, ...]]] = [(0.0, ())]
        for pos in positions:
            grown = [
                (score + lp, seq + (tok,))
                for score, seq in beam
                for lp, tok in zip(log_probs[pos].tolist(), ids[pos].tolist())
                if tok not in self._special
            ]
            grown.sort(key=lambda item: -item[0])
            beam = grown[: self.max_candidates]
        words = []
        for _, seq in beam:
            tokens = self.tokenizer.convert_ids_to_tokens(list(seq))
            if tokens[0].startswith("##"):
                continue
            word = "".join(t.removeprefix("##") for t in tokens)
            if is_word(word):
                words.append(word)
        return list(dict.fromkeys(words))

    def __call__(self, text: AttackedText, indices: Sequence[int]) -> list[AttackedText]:
        log_probs, ids, offsets = self._predict(text.text)
        spans = self._word_spans(text)
        out = []
        for i in indices:
            start, end = spans[i]
            positions = [t for t, (a, b) in enumerate(offsets) if b > a >= start and b <= end]
            if not positions:
                continue  # truncated away, or the tokenizer dropped the word's characters
            for new in self._candidates(log_probs, ids, positions):
                if new != text.words[i]:
                    out.append(text.replace_word(i, new))
        return out


__all__ = [
    "HOMOGLYPHS",
    "TEXTATTACK_HOMOGLYPHS",
    "CharacterDelete",
    "CharacterInsert",
    "CharacterSubstitute",
    "CompositeTransformation",
    "EditDraws",
    "EmbeddingSwap",
    "HomoglyphSwap",
    "MaskedLMSwap",
    "NeighbourSwap",
    "Transformation",
    "WordNetSwap",
    "WordSwap",
]
