"""English stopwords: words that attack recipes and word-level shifts never swap.

An explicit list written for this project (no NLTK stopword data is installable here): articles and
determiners, pronouns in all their forms, auxiliary and modal verbs with their contractions,
prepositions, conjunctions, common function adverbs, and the clitic tokens that GLUE's tokenised text
splits off ("'s", "n't"). Like TextFooler's list, it deliberately includes the negations ("not",
"no", "never", "n't", "nor", "none", "nothing", ...): swapping a negation flips meaning rather than
perturbing it, and keeping them here makes the recipes behave like the originals.
"""

from __future__ import annotations

from functools import lru_cache
from importlib import resources

_ARTICLES_DETERMINERS = """
a an the this that these those each every either neither any some all both few many much more most
less least several such other another same own enough whatever whichever whose what which
"""
_PRONOUNS = """
i me my mine myself we us our ours ourselves you your yours yourself yourselves he him his himself
she her hers herself it its itself they them their theirs themselves one ones oneself who whom
someone somebody something anyone anybody anything everyone everybody everything whoever whomever
"""
_AUXILIARIES = """
be am is are was were been being have has had having do does did doing done shall should will would
can could may might must ought need dare
i'm you're he's she's it's we're they're i've you've we've they've i'd you'd he'd she'd we'd they'd
i'll you'll he'll she'll we'll they'll that's there's here's what's who's where's let's
's 're 've 'd 'll 'm
"""
_NEGATIONS = """
not no never nor none nobody nothing nowhere neither n't cannot
isn't aren't wasn't weren't hasn't haven't hadn't doesn't don't didn't won't wouldn't shan't
shouldn't can't couldn't mustn't mightn't needn't ain't
"""
_PREPOSITIONS = """
about above across after against along amid among amongst around as at before behind below beneath
beside besides between beyond by despite down during except for from in inside into like near of
off on onto out outside over past per since through throughout till to toward towards under
underneath until unto up upon via with within without
"""
_CONJUNCTIONS = """
and but or so yet if then else because although though unless whereas whether while whilst than
once lest
"""
_FUNCTION_ADVERBS = """
also again already always ever here there where when why how hence thus therefore however
moreover furthermore meanwhile otherwise instead indeed anyway anyhow afterwards beforehand
thereafter thereby therein thereupon hereby herein whereby wherein whereupon wherever whenever
somehow somewhere anywhere everywhere elsewhere just only even still too very quite rather almost
perhaps maybe often sometimes seldom namely etc
"""

STOPWORDS: frozenset[str] = frozenset(
    " ".join((_ARTICLES_DETERMINERS, _PRONOUNS, _AUXILIARIES, _NEGATIONS, _PREPOSITIONS, _CONJUNCTIONS,
              _FUNCTION_ADVERBS)).split()
)


def is_stopword(word: str) -> bool:
    """Whether ``word`` (case-insensitive; a curly apostrophe counts as ``'``) is in :data:`STOPWORDS`."""
    if not isinstance(word, str):
        raise TypeError(f"word must be a str, got {type(word).__name__}")
    return word.strip().lower().replace("\u2019", "'") in STOPWORDS


@lru_cache(maxsize=1)
def nltk_english_stopwords() -> tuple[str, ...]:
    """NLTK's English stopword list, in NLTK's order: the list TextAttack's recipes use by default.

    Shipped with the package as data (``robustprune/data/stopwords/nltk_english.txt``; its
    ``PROVENANCE.md`` says where it came from), so no NLTK download is needed."""
    text = resources.files("robustprune.data").joinpath("stopwords/nltk_english.txt").read_text(encoding="utf-8")
    return tuple(line.strip() for line in text.splitlines() if line.strip())


@lru_cache(maxsize=1)
def textfooler_stopwords() -> tuple[str, ...]:
    """TextFooler's stopword list (266 words, alphabetical): the list TextAttack's TextFooler recipe passes to
    its ``StopwordModification`` instead of NLTK's.

    Shipped with the package as data (``robustprune/data/stopwords/textfooler_english.txt``; its
    ``PROVENANCE.md`` says where it came from)."""
    text = resources.files("robustprune.data").joinpath("stopwords/textfooler_english.txt").read_text(
        encoding="utf-8")
    return tuple(line.strip() for line in text.splitlines() if line.strip())


__all__ = ["STOPWORDS", "is_stopword", "nltk_english_stopwords", "textfooler_stopwords"]
