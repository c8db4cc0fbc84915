"""What a word is, once for the attacks and the shifts: the word pattern, the token pattern, and the
case rule for a swapped-in word.

A *word* is a maximal run of letters or digits, optionally joined by inner apostrophes or hyphens
(``don't``, ``n't``, ``well-made``, ``2002``), or an English clitic that tokenised corpora such as SST-2
split off (``'s``, ``'re``, ``'ve``, ``'d``, ``'ll``, ``'m``). A *token* is a word or any other single
non-space character (punctuation), so a text is words, punctuation and the whitespace between them.
"""

from __future__ import annotations

import re

# A clitic split off by tokenised corpora ("it 's", "they 're") keeps its apostrophe, so stopword lists
# that hold "'s" match it; otherwise a word is letters/digits joined by inner apostrophes or hyphens.
WORD_PATTERN = re.compile(r"'(?:s|re|ve|d|ll|m)(?![^\W_])|[^\W_]+(?:['\-][^\W_]+)*", re.IGNORECASE)

# Words first, so "don't" stays one token; then every other non-space character on its own.
TOKEN_PATTERN = re.compile(rf"{WORD_PATTERN.pattern}|\S", re.IGNORECASE)


def is_word(text: str) -> bool:
    """True when ``text`` is exactly one word (e.g. a synonym or neighbour that may be swapped in)."""
    return WORD_PATTERN.fullmatch(text) is not None


def recover_case(new: str, like: str) -> str:
    """``new`` in the letter case of ``like`` (lower, Title or UPPER; anything else leaves ``new`` as is),
    TextAttack's rule for a word put in another's place."""
    if like.islower():
        return new.lower()
    if like.isupper() and len(like) > 1:
        return new.upper()
    if like[:1].isupper() and like[1:].islower():
        return new[:1].upper() + new[1:].lower()
    return new


__all__ = ["TOKEN_PATTERN", "WORD_PATTERN", "is_word", "recover_case"]
