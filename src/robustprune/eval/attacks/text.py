"""The text under attack: words that may be swapped, the exact characters between them, and bookkeeping.

Tokenisation (documented, lossless): a *word* is what :mod:`robustprune.eval.words` says (letters or
digits joined by inner apostrophes or hyphens, or a split-off clitic such as ``'s``); everything
between two words (spaces, punctuation) is a *separator* and is never perturbed. A text of ``n``
words is stored as ``n + 1`` separators around them, so ``"".join`` re-creates the input character for
character, and a perturbed text re-joins with the original punctuation and spacing. This follows
TextAttack's notion of words (punctuation is not a word) without re-tokenising perturbed text: a swapped-in
word may itself contain a space (TextBugger's space insertion) and stays one word slot.

For sentence-pair tasks only one side is attacked (the second, the hypothesis, by default); the other is
carried along unchanged in :attr:`AttackedText.context`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from typing import Any

from robustprune.data.datasets import ClassifierInput
from robustprune.eval.words import WORD_PATTERN


def split_words(text: str) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """``(words, separators)`` of ``text`` with ``len(separators) == len(words) + 1``."""
    words, seps, last = [], [], 0
    for match in WORD_PATTERN.finditer(text):
        seps.append(text[last : match.start()])
        words.append(match.group())
        last = match.end()
    seps.append(text[last:])
    return tuple(words), tuple(seps)


@dataclass(frozen=True)
class AttackedText:
    """An immutable text with word slots; transformations return new instances.

    Attributes:
        words: the word slots (see the module docstring for what a word is).
        separators: ``len(words) + 1`` strings around the words.
        context: for pair tasks, the side that is not attacked; None for single sentences.
        attacked_first: for pair tasks, True when the attacked text is the first of the pair.
        modified: indices of words changed relative to the original text.
        newly_modified: indices changed by the transformation that produced this text.
        attrs: annotations set while filtering (e.g. ``"similarity"``); not part of equality.
    """

    words: tuple[str, ...]
    separators: tuple[str, ...]
    context: str | None = None
    attacked_first: bool = False
    modified: frozenset[int] = frozenset()
    newly_modified: frozenset[int] = frozenset()
    attrs: dict[str, Any] = field(default_factory=dict, compare=False, hash=False, repr=False)

    def __post_init__(self) -> None:
        if len(self.separators) != len(self.words) + 1:
            raise ValueError(
                f"separators must have len(words) + 1 = {len(self.words) + 1} entries, "
                f"got {len(self.separators)}"
            )

    @classmethod
    def from_text(cls, text: str, context: str | None = None, attacked_first: bool = False) -> AttackedText:
        """Split ``text`` into words; ``context`` is the fixed other side of a sentence pair."""
        if not isinstance(text, str):
            raise TypeError(f"text must be a str, got {type(text).__name__}")
        words, seps = split_words(text)
        return cls(words, seps, context, attacked_first)

    @property
    def text(self) -> str:
        """The attacked side, re-joined."""
        parts = [self.separators[0]]
        for word, sep in zip(self.words, self.separators[1:]):
            parts += [word, sep]
        return "".join(parts)

    @property
    def num_words(self) -> int:
        return len(self.words)

    def model_input(self) -> ClassifierInput:
        """What the classifier sees: the text, or the ``(first, second)`` pair with the context in place."""
        if self.context is None:
            return self.text
        return (self.text, self.context) if self.attacked_first else (self.context, self.text)

    def replace_word(self, index: int, word: str) -> AttackedText:
        """A copy with word ``index`` replaced; it counts as modified even if ``word`` is unchanged."""
        self._check_index(index)
        words = self.words[:index] + (word,) + self.words[index + 1 :]
        return replace(
            self, words=words, modified=self.modified | {index}, newly_modified=frozenset({index}), attrs={}
        )

    def delete_word(self, index: int) -> AttackedText:
        """A copy without word ``index`` (used to rank word importance).

        The two separators around it are merged, keeping one space where both had whitespace and none
        at either end of the text. Word indices after ``index`` shift by one, so the result carries no
        modification bookkeeping."""
        self._check_index(index)
        left, right = self.separators[index], self.separators[index + 1]
        if left[-1:].isspace() and right[:1].isspace():
            right = right.lstrip()
        merged = left + right
        if index == 0:
            merged = merged.lstrip()
        if index == len(self.words) - 1 and not right.strip():
            merged = merged.rstrip()
        words = self.words[:index] + self.words[index + 1 :]
        seps = self.separators[:index] + (merged,) + self.separators[index + 2 :]
        return AttackedText(words, seps, self.context, self.attacked_first)

    def window(self, index: int, size: int) -> str:
        """The text spanning ``size`` words around word ``index`` (as TextAttack's text window: centred,
        shifted inward at either end), separators between those words included."""
        self._check_index(index)
        n = len(self.words)
        half = (size - 1) / 2.0
        if index - half < 0:
            start, end = 0, min(size - 1, n - 1)
        elif index + half >= n:
            start, end = max(0, n - size), n - 1
        else:
            start, end = index - math.ceil(half), index + math.floor(half)
        parts = [self.words[start]]
        for i in range(start + 1, end + 1):
            parts += [self.separators[i], self.words[i]]
        return "".join(parts)

    def words_diff(self, other: AttackedText) -> list[int]:
        """Indices whose words differ from ``other``'s (same number of word slots required)."""
        if len(other.words) != len(self.words):
            raise ValueError(f"cannot compare texts of {len(self.words)} and {len(other.words)} words")
        return [i for i, (a, b) in enumerate(zip(self.words, other.words)) if a != b]

    def _check_index(self, index: int) -> None:
        if not 0 <= index < len(self.words):
            raise IndexError(f"word index {index} out of range for a text of {len(self.words)} words")


__all__ = ["AttackedText", "split_words"]
