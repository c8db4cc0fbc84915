"""The text under attack: words that may be swapped, the exact characters between them, and bookkeeping.

Tokenisation (documented, lossless): a *word* is what :mod:`robustprune.eval.words` says (letters or
digits joined by inner apostrophes or hyphens, or a split-off clitic such as ``'s``); everything
between two words (spaces, punctuation) is a *separator* and is never perturbed. A text of ``n``
words is stored as ``n + 1`` separators around them, so ``"".join`` re-creates the input character for
character, and a perturbed text re-joins with the original punctuation and spacing. This follows
TextAttack's notion of words (punctuation is not a word) without re-tokenising perturbed text: a swapped-in
word may itself contain a space (TextBugger's space insertion) and stays one word slot.

Two word rules (:data:`MODES`), chosen per recipe:

- ``"textattack"`` (the default): TextAttack 0.3.11's ``words_from_text`` and text rebuilding, so attacks
  see and produce exactly TextAttack's texts. Each whitespace-separated chunk is cut into runs of word
  characters, apostrophes, hyphens, underscores, asterisks, at signs and the three look-alike symbols
  TextAttack adds (backquote, U+02D7, U+00D7); apostrophes, hyphens, underscores, asterisks and at signs
  are stripped from both ends of each run. So SST-2's ``'s`` is the word ``s`` and its backquotes are
  words. A word's separator is the text from the previous word's end to the word's first occurrence
  after it, which is how TextAttack re-joins a perturbed text.
- ``"paper"``: robustprune's own rule (:mod:`robustprune.eval.words`): clitics keep their apostrophe
  and punctuation is never a word.

For sentence-pair tasks only one side is attacked (the second, the hypothesis, by default); the other is
carried along unchanged in :attr:`AttackedText.context`.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field, replace
from typing import Any

from robustprune.data.datasets import ClassifierInput
from robustprune.eval.words import WORD_PATTERN

MODES = ("textattack", "paper")
# Raised whenever a change makes the textattack mode decide differently (2: TextFooler / TextBugger as
# TextAttack given the same resources). Sweeps hash it, so results of two revisions are never mixed.
TEXTATTACK_MODE_REVISION = 2

# TextAttack's word characters besides \w; the edge characters are stripped from each end of a word.
_TEXTATTACK_EDGE = "'-_*@"
_TEXTATTACK_RUN = re.compile(r"[\w\u02d7`\u00d7'\-_*@]+")


def check_mode(mode: str) -> str:
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
    return mode


def textattack_words(text: str) -> list[str]:
    """The words TextAttack 0.3.11 finds in ``text`` (its ``words_from_text``, for non-Chinese text)."""
    words = []
    for chunk in text.split():
        for run in _TEXTATTACK_RUN.findall(chunk.strip(_TEXTATTACK_EDGE)):
            word = run.strip(_TEXTATTACK_EDGE)
            if word:
                words.append(word)
    return words


def split_words(text: str, mode: str = "paper") -> tuple[tuple[str, ...], tuple[str, ...]]:
    """``(words, separators)`` of ``text`` under ``mode``'s word rule, ``len(separators) == len(words) + 1``."""
    words, seps, last = [], [], 0
    if check_mode(mode) == "textattack":
        for word in textattack_words(text):
            start = text.index(word, last)
            seps.append(text[last:start])
            words.append(word)
            last = start + len(word)
    else:
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
        mode: the word rule the text was split with (see :data:`MODES`); deleting a word follows it.
        attrs: annotations set while filtering (e.g. ``"similarity"``); not part of equality.
    """

    words: tuple[str, ...]
    separators: tuple[str, ...]
    context: str | None = None
    attacked_first: bool = False
    modified: frozenset[int] = frozenset()
    newly_modified: frozenset[int] = frozenset()
    mode: str = "paper"
    attrs: dict[str, Any] = field(default_factory=dict, compare=False, hash=False, repr=False)

    def __post_init__(self) -> None:
        if len(self.separators) != len(self.words) + 1:
            raise ValueError(
                f"separators must have len(words) + 1 = {len(self.words) + 1} entries, "
                f"got {len(self.separators)}"
            )

    @classmethod
    def from_text(cls, text: str, context: str | None = None, attacked_first: bool = False,
                  mode: str = "paper") -> AttackedText:
        """Split ``text`` into words by ``mode``'s rule; ``context`` is the fixed other side of a pair."""
        if not isinstance(text, str):
            raise TypeError(f"text must be a str, got {type(text).__name__}")
        words, seps = split_words(text, mode)
        return cls(words, seps, context, attacked_first, mode=mode)

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
        """A copy with word ``index`` replaced.

        ``"paper"``: ``word`` fills the slot as given (it may contain a space) and counts as modified even if
        unchanged. ``"textattack"``: as TextAttack's ``replace_word_at_index``: ``word`` is put in the old
        word's place and the text is split into words again, so ``word`` may become several words (a space
        inserted by TextBugger) or none; the indices after it then shift, and modified indices with them.
        It counts as modified only if it differs from the old word."""
        self._check_index(index)
        if self.mode == "textattack":
            return self._textattack_replace(index, word)
        words = self.words[:index] + (word,) + self.words[index + 1 :]
        return replace(
            self, words=words, modified=self.modified | {index}, newly_modified=frozenset({index}), attrs={}
        )

    def _textattack_replace(self, index: int, word: str) -> AttackedText:
        old = self.words[index]
        left, right = self.separators[index], self.separators[index + 1]
        new_words = textattack_words(word)
        if not new_words and not (index == len(self.words) - 1 and not right):
            # TextAttack drops one space when a word becomes no word (as when deleting it)
            if index == 0:
                right = right[1:] if right[:1] == " " else right
            elif left[-1:] == " ":
                left = left[:-1]
        seps, words = list(self.separators), list(self.words)
        seps[index], seps[index + 1], words[index] = left, right, word
        text = "".join(sep + w for sep, w in zip(seps, words)) + seps[-1]
        words, seps = split_words(text, "textattack")
        shift = len(new_words) - len(textattack_words(old))
        modified = set(self.modified)
        if shift:
            modified = {m for m in modified if m < index} | {m + shift for m in modified if m > index}
        newly = set(range(index, index + len(new_words))) if old != word else set()
        return AttackedText(words, seps, self.context, self.attacked_first, frozenset(modified | newly),
                            frozenset(newly), mode=self.mode)

    def delete_word(self, index: int) -> AttackedText:
        """A copy without word ``index`` (used to rank word importance).

        The two separators around it are merged. ``"paper"``: keeping one space where both had
        whitespace and none at either end of the text. ``"textattack"``: as TextAttack, dropping one space
        after a deleted first word, else one space before the deleted word. Word indices after
        ``index`` shift by one, so the result carries no modification bookkeeping."""
        self._check_index(index)
        left, right = self.separators[index], self.separators[index + 1]
        if self.mode == "textattack":
            if index == len(self.words) - 1 and not right:
                pass  # nothing follows the word: TextAttack keeps every space
            elif index == 0:
                right = right[1:] if right[:1] == " " else right
            elif left[-1:] == " ":
                left = left[:-1]
            words = self.words[:index] + self.words[index + 1 :]
            seps = self.separators[:index] + (left + right,) + self.separators[index + 2 :]
            return AttackedText(words, seps, self.context, self.attacked_first, mode=self.mode)
        if left[-1:].isspace() and right[:1].isspace():
            right = right.lstrip()
        merged = left + right
        if index == 0:
            merged = merged.lstrip()
        if index == len(self.words) - 1 and not right.strip():
            merged = merged.rstrip()
        words = self.words[:index] + self.words[index + 1 :]
        seps = self.separators[:index] + (merged,) + self.separators[index + 2 :]
        return AttackedText(words, seps, self.context, self.attacked_first, mode=self.mode)

    def window(self, index: int, size: int) -> str:
        """The text spanning ``size`` words around word ``index`` (as TextAttack's text window: centred,
        shifted inward at either end), separators between those words included."""
        self._check_index(index)
        start, end = self._window_bounds(index, size)
        parts = [self.words[start]]
        for i in range(start + 1, end + 1):
            parts += [self.separators[i], self.words[i]]
        return "".join(parts)

    def textattack_window(self, index: int, size: float) -> str:
        """TextAttack's ``text_window_around_index``: the same words as :meth:`window` (``size`` may be
        ``math.inf``: from the first word to the last), located as TextAttack locates them: each word's first
        case-insensitive occurrence after the previous one's end. Like TextAttack, ``index`` is not checked
        against the text's length (a candidate's index can lie past the end of a shorter reference)."""
        start, end = self._window_bounds(index, size)
        return self.text[self._textattack_offset(start) : self._textattack_offset(end) + len(self.words[end])]

    def _window_bounds(self, index: int, size: float) -> tuple[int, int]:
        """First and last word of the ``size``-word window around ``index``: centred, shifted inward at
        either end (TextAttack's ``text_window_around_index``)."""
        n = len(self.words)
        half = (size - 1) / 2.0
        if index - half < 0:
            start, end = 0, min(size - 1, n - 1)
        elif index + half >= n:
            start, end = max(0, n - size), n - 1
        else:
            start, end = index - math.ceil(half), index + math.floor(half)
        return int(start), int(end)

    def _textattack_offset(self, index: int) -> int:
        lower, position = self.text.lower(), 0
        for word in self.words[: index + 1]:
            position = lower.find(word.lower(), position) + len(word)
        return position - len(self.words[index])

    def words_diff(self, other: AttackedText) -> list[int]:
        """Indices whose words differ from ``other``'s (same number of word slots required)."""
        if len(other.words) != len(self.words):
            raise ValueError(f"cannot compare texts of {len(self.words)} and {len(other.words)} words")
        return [i for i, (a, b) in enumerate(zip(self.words, other.words)) if a != b]

    def _check_index(self, index: int) -> None:
        if not 0 <= index < len(self.words):
            raise IndexError(f"word index {index} out of range for a text of {len(self.words)} words")


__all__ = ["MODES", "AttackedText", "check_mode", "split_words", "textattack_words"]
