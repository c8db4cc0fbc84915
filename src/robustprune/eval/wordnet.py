"""WordNet 3.0 through nltk's reader, shipped inside the package: no apt, no nltk download.

``data/wordnet/wordnet-3.0.zip`` holds the WordNet 3.0 database files nltk's
:class:`~nltk.corpus.reader.wordnet.WordNetCorpusReader` reads (``index.*``, ``data.*``, ``*.exc``)
exactly as Debian's ``wordnet-base`` 1:3.0-37 installs them (``SHA256SUMS`` beside it), plus the
``lexnames`` file nltk also wants, written from WordNet's documented table (lexnames(5WN)). nltk reads
the archive in place; nothing is unpacked. WordNet's licence is ``data/wordnet/LICENSE``.

``$ROBUSTPRUNE_WORDNET_DIR`` overrides it with another WordNet 3.0 dict directory; when that directory
has no ``lexnames`` file, the dict files are copied once into a per-user cache beside one (nothing is
written beside the user's files).

Used for WordNet synonym swaps (PWWS, EDA) and as the part-of-speech source that stands in for a
tagger (no NLTK tagger data is installable here).
"""

from __future__ import annotations

import os
import shutil
import warnings
from functools import lru_cache
from pathlib import Path
from typing import Any

ENV_OVERRIDE = "ROBUSTPRUNE_WORDNET_DIR"
ARCHIVE = Path(__file__).resolve().parents[1] / "data" / "wordnet" / "wordnet-3.0.zip"
_NEEDED = ("index.noun", "index.verb", "index.adj", "index.adv",
           "data.noun", "data.verb", "data.adj", "data.adv",
           "noun.exc", "verb.exc", "adj.exc", "adv.exc")
ARCHIVE_MEMBERS = _NEEDED + ("lexnames",)
_COPIED = _NEEDED + ("cntlist.rev", "index.sense")  # what nltk's reader opens, when present

# The 45 lexicographer files of WordNet 3.0, in file-number order (lexnames(5WN)); the third field
# of the lexnames file is the syntactic category: 1 noun, 2 verb, 3 adjective, 4 adverb.
_LEXNAMES = (
    ("adj.all", 3), ("adj.pert", 3), ("adv.all", 4), ("noun.Tops", 1), ("noun.act", 1),
    ("noun.animal", 1), ("noun.artifact", 1), ("noun.attribute", 1), ("noun.body", 1),
    ("noun.cognition", 1), ("noun.communication", 1), ("noun.event", 1), ("noun.feeling", 1),
    ("noun.food", 1), ("noun.group", 1), ("noun.location", 1), ("noun.motive", 1), ("noun.object", 1),
    ("noun.person", 1), ("noun.phenomenon", 1), ("noun.plant", 1), ("noun.possession", 1),
    ("noun.process", 1), ("noun.quantity", 1), ("noun.relation", 1), ("noun.shape", 1),
    ("noun.state", 1), ("noun.substance", 1), ("noun.time", 1), ("verb.body", 2), ("verb.change", 2),
    ("verb.cognition", 2), ("verb.communication", 2), ("verb.competition", 2), ("verb.consumption", 2),
    ("verb.contact", 2), ("verb.creation", 2), ("verb.emotion", 2), ("verb.motion", 2),
    ("verb.perception", 2), ("verb.possession", 2), ("verb.social", 2), ("verb.stative", 2),
    ("verb.weather", 2), ("adj.ppl", 3),
)
POS_TAGS: dict[str, str] = {"noun": "n", "verb": "v", "adj": "a", "adv": "r"}


def _cache_root() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "robustprune" / "wordnet"


def lexnames_text() -> str:
    """WordNet 3.0's ``lexnames`` file: ``NN<TAB>name<TAB>category`` for the 45 lexicographer files."""
    return "".join(f"{i:02d}\t{name}\t{category}\n" for i, (name, category) in enumerate(_LEXNAMES))


def _prepared(source: Path) -> Path:
    """``source`` itself when it has a lexnames file, else a per-user cache copy plus lexnames."""
    if (source / "lexnames").is_file():
        return source
    # One cache dir per source, so two override directories never mix. Copies, not symlinks: nltk's
    # reader refuses files that resolve outside its root directory.
    target = _cache_root() / str(source.resolve()).strip("/").replace("/", "_")
    target.mkdir(parents=True, exist_ok=True)
    for name in _COPIED:
        src, dst = source / name, target / name
        if src.is_file() and not (dst.is_file() and dst.stat().st_size == src.stat().st_size):
            tmp = target / f"{name}.{os.getpid()}.tmp"
            shutil.copyfile(src, tmp)
            tmp.replace(dst)  # atomic: a concurrent reader never sees a half-written file
    lexnames = target / "lexnames"
    if not lexnames.is_file() or lexnames.read_text() != lexnames_text():
        tmp = target / f"lexnames.{os.getpid()}.tmp"
        tmp.write_text(lexnames_text())
        tmp.replace(lexnames)
    return target


def wordnet_source() -> str:
    """Where nltk reads WordNet 3.0 from: the package's archive (``.../wordnet-3.0.zip/wordnet/``), or
    the directory named by ``$ROBUSTPRUNE_WORDNET_DIR`` (prepared with a ``lexnames`` when it lacks one).

    Raises:
        FileNotFoundError: ``$ROBUSTPRUNE_WORDNET_DIR`` is set but lacks the dict files, or the package's
            archive is missing (a broken install); the message names the path and what to do.
    """
    override = os.environ.get(ENV_OVERRIDE)
    if override:
        directory = Path(override).expanduser()
        missing = [name for name in _NEEDED if not (directory / name).is_file()]
        if missing:
            lacks = "it does not exist" if not directory.is_dir() else f"it lacks {', '.join(missing)}"
            raise FileNotFoundError(
                f"${ENV_OVERRIDE}={override} is not a WordNet 3.0 dict directory ({lacks}); "
                f"unset {ENV_OVERRIDE} to use the WordNet the package ships")
        return str(_prepared(directory))
    if not ARCHIVE.is_file():
        raise FileNotFoundError(f"robustprune's WordNet archive {ARCHIVE} is missing: the installation is "
                                f"incomplete; reinstall robustprune")
    return f"{ARCHIVE}/wordnet/"


@lru_cache(maxsize=1)
def wordnet() -> Any:
    """The shared nltk ``WordNetCorpusReader`` over :func:`wordnet_source` (loaded once, ~2 s)."""
    import nltk.data
    from nltk.corpus.reader.wordnet import WordNetCorpusReader

    root = wordnet_source()
    allowed = str(ARCHIVE) if root.startswith(f"{ARCHIVE}/") else root
    if allowed not in nltk.data.path:
        nltk.data.path.append(allowed)  # nltk only opens files under its data path (its documented opt-in)

    class EnglishWordNet(WordNetCorpusReader):
        def map_wn(self, version: str = "wordnet") -> None:
            # nltk maps synset offsets to the version of its own downloaded 'wordnet' corpus for
            # multilingual (OMW) lookups; English-only use needs no mapping and no nltk download.
            return None

    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*multilingual.*")
        return EnglishWordNet(root, None)


def wordnet_available() -> bool:
    """Whether WordNet can be loaded here: nltk imports and :func:`wordnet_source` finds the files."""
    try:
        wordnet_source()
        import nltk  # noqa: F401
    except (FileNotFoundError, ImportError):
        return False
    return True


def _check_word(word: str) -> str:
    if not isinstance(word, str):
        raise TypeError(f"word must be a str, got {type(word).__name__}")
    return word.strip().lower()


@lru_cache(maxsize=65536)
def _synonyms(word: str, pos: str | None) -> tuple[str, ...]:
    seen: dict[str, None] = {}
    for synset in wordnet().synsets(word, pos=pos):
        for name in synset.lemma_names():
            lemma = name.lower()
            if "_" in lemma or " " in lemma or lemma == word:
                continue
            seen.setdefault(lemma, None)
    return tuple(seen)


def synonyms(word: str, pos: str | None = None) -> list[str]:
    """Single-word WordNet synonyms of ``word``, lowercased, in WordNet's synset order.

    All lemma names of the synsets of ``word`` (nltk applies morphy, so "movies" finds "movie"'s
    synsets), restricted to ``pos`` when given. The word itself and multi-word lemmas
    ("motion_picture") are left out, duplicates removed keeping the first.

    Args:
        word: any word; unknown words give ``[]``.
        pos: one of ``"noun"``, ``"verb"``, ``"adj"`` (satellites included), ``"adv"``, or None for all.
    """
    word = _check_word(word)
    if pos is not None and pos not in POS_TAGS:
        raise ValueError(f"pos must be one of {sorted(POS_TAGS)} or None, got {pos!r}")
    if not word:
        return []
    return list(_synonyms(word, None if pos is None else POS_TAGS[pos]))


@lru_cache(maxsize=65536)
def lemma_names(word: str) -> tuple[str, ...]:
    """Every lemma name of every synset of ``word`` as WordNet spells it ("Good", "motion_picture"),
    in synset order, repeats included: the raw material TextAttack's WordNet swap filters itself."""
    if not isinstance(word, str):
        raise TypeError(f"word must be a str, got {type(word).__name__}")
    return tuple(name for synset in wordnet().synsets(word) for name in synset.lemma_names())


@lru_cache(maxsize=65536)
def word_pos(word: str) -> frozenset[str]:
    """The parts of speech WordNet gives ``word`` or its morphy base form: a subset of
    ``{"noun", "verb", "adj", "adv"}``.

    WordNet covers content words only, so pure function words ("the", "of", "and") get an empty
    set; a few function words also have a rare content sense ("in": inch, "a": vitamin A), which is
    why attack recipes check :func:`robustprune.eval.stopwords.is_stopword` first.
    """
    word = _check_word(word)
    if not word:
        return frozenset()
    reader = wordnet()
    return frozenset(name for name, tag in POS_TAGS.items() if reader.synsets(word, pos=tag))


__all__ = ["ARCHIVE", "ENV_OVERRIDE", "POS_TAGS", "lemma_names", "lexnames_text", "synonyms", "word_pos", "wordnet",
           "wordnet_available", "wordnet_source"]
