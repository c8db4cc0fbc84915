"""Distribution shifts as text augmenters, and :func:`apply_shift` to shift a whole dataset.

Every augmenter is a small object with a ``name`` and ``__call__(text, rng) -> str``; all randomness
comes from the ``random.Random`` passed in, so a shift is reproducible from a seed.

Words: text is split into tokens by the rule the attacks use too (:mod:`robustprune.eval.words`,
:func:`tokenize`): a word is a run of letters / digits joined across inner apostrophes and hyphens
("don't", "well-known", GLUE's split-off "n't"); a clitic "'s", "'re", "'ve", "'ll", "'d", "'m" standing
alone (GLUE's tokenised text) is one token; every other non-space character is a token of its own
(punctuation is kept). Only tokens with a letter are edited; stopwords (:mod:`robustprune.eval.stopwords`)
are never replaced; a swapped-in word takes the case of the word it replaces
(:func:`~robustprune.eval.words.recover_case`). Edited text keeps the original whitespace between
untouched tokens; an inserted word gets single spaces.

Shifts: :class:`CharSwap` (adjacent interior letters swapped), EDA (Wei & Zou, 2019:
:class:`SynonymReplace`, :class:`RandomInsert`, :class:`RandomSwap`, :class:`RandomDelete`, and
:class:`EDA` choosing one of them per text), :class:`WordNetShift`, :class:`EmbeddingShift` (GloVe
neighbours), :class:`BackTranslation` (MarianMT, English -> German -> English) and :class:`ClareShift`
(CLARE-style masked-LM replace / insert / merge). The last two need Hugging Face models; when one
cannot be loaded (e.g. offline) they raise a RuntimeError naming the model and the reason.

A config names shifts (:data:`SHIFT_AUGMENTERS`: ``char_swap``, ``eda``, ``wordnet``, ``embedding_swap``,
``deletion`` (:class:`RandomDelete` alone), ``back_translation``, ``clare``) with their settings
(:func:`shift_defaults`); :func:`make_shift` builds one.
"""

from __future__ import annotations

import copy
import random
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any, Literal

from tqdm.auto import tqdm

from robustprune.data.datasets import TextDataset
from robustprune.eval.stopwords import is_stopword
from robustprune.eval.words import TOKEN_PATTERN, is_word, recover_case

# ---------------------------------------------------------------------------------------------------
# tokens


@dataclass
class _Token:
    text: str
    before: str  # whitespace between the previous token (or the start) and this one


class Tokens:
    """A tokenised text that can be edited and rendered back with its original spacing."""

    def __init__(self, text: str) -> None:
        self.items: list[_Token] = []
        end = 0
        for match in TOKEN_PATTERN.finditer(text):
            self.items.append(_Token(match.group(), text[end:match.start()]))
            end = match.end()
        self.tail = text[end:]

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int) -> str:
        return self.items[i].text

    def words(self) -> list[str]:
        return [t.text for t in self.items]

    def is_word(self, i: int) -> bool:
        return any(c.isalpha() for c in self.items[i].text) and self.items[i].text[0] not in "'\u2019"

    def editable(self, i: int) -> bool:
        """A word that may be replaced: has a letter and is not a stopword."""
        return self.is_word(i) and not is_stopword(self.items[i].text)

    def replace(self, i: int, word: str) -> None:
        self.items[i].text = word

    def delete(self, i: int) -> None:
        removed = self.items.pop(i)
        if i == 0 and self.items:
            self.items[0].before = removed.before  # keep the text's leading whitespace

    def insert(self, i: int, word: str) -> None:
        """Insert ``word`` before token ``i`` (``i == len(self)`` appends)."""
        if i == 0:
            first_before = self.items[0].before if self.items else ""
            if self.items:
                self.items[0].before = " "
            self.items.insert(0, _Token(word, first_before))
        else:
            self.items.insert(i, _Token(word, " "))
            if i + 1 < len(self.items) and not self.items[i + 1].before:
                self.items[i + 1].before = " "

    def swap(self, i: int, j: int) -> None:
        self.items[i].text, self.items[j].text = self.items[j].text, self.items[i].text

    def merge(self, i: int, word: str) -> None:
        """Replace tokens ``i`` and ``i + 1`` by one ``word``."""
        self.items[i].text = word
        del self.items[i + 1]

    def render(self) -> str:
        return "".join(t.before + t.text for t in self.items) + self.tail


def tokenize(text: str) -> list[str]:
    """The tokens of ``text`` under the module's rule (words, clitics, single punctuation marks)."""
    return Tokens(text).words()


def _check_rate(value: float, name: str) -> float:
    if not isinstance(value, (int, float)) or not 0.0 <= value <= 1.0:
        raise ValueError(f"{name} must be a number in [0, 1], got {value!r}")
    return float(value)


def _count(alpha: float, n_words: int) -> int:
    return max(1, int(alpha * n_words))


# ---------------------------------------------------------------------------------------------------
# augmenters


class Augmenter:
    """Base class: ``name`` and ``__call__(text, rng)``; ``augment_many`` batches (default: a loop)."""

    name: str = "augmenter"

    def __call__(self, text: str, rng: random.Random) -> str:
        raise NotImplementedError

    def augment_many(self, texts: Sequence[str], rngs: Sequence[random.Random]) -> list[str]:
        return [self(text, rng) for text, rng in zip(texts, rngs)]

    def __repr__(self) -> str:
        return self.name


class CharSwap(Augmenter):
    """Swap two adjacent interior letters (first and last kept) in a fraction of the words.

    Each word of at least ``min_length`` characters is perturbed with probability ``rate``; when
    none is drawn, one such word is perturbed so that the text always changes if it can.
    """

    def __init__(self, rate: float = 0.1, min_length: int = 4) -> None:
        self.rate = _check_rate(rate, "rate")
        if not isinstance(min_length, int) or min_length < 4:
            raise ValueError(f"min_length must be an int >= 4 (two interior letters), got {min_length!r}")
        self.min_length = min_length
        self.name = f"char_swap(rate={self.rate})"

    @staticmethod
    def _swappable(word: str) -> list[int]:
        return [j for j in range(1, len(word) - 2) if word[j] != word[j + 1] and word[j].isalpha()
                and word[j + 1].isalpha()]

    def __call__(self, text: str, rng: random.Random) -> str:
        tokens = Tokens(text)
        eligible = [i for i in range(len(tokens)) if tokens.is_word(i) and len(tokens[i]) >= self.min_length
                    and self._swappable(tokens[i])]
        chosen = [i for i in eligible if rng.random() < self.rate]
        if not chosen and eligible:
            chosen = [rng.choice(eligible)]
        for i in chosen:
            word = tokens[i]
            j = rng.choice(self._swappable(word))
            tokens.replace(i, word[:j] + word[j + 1] + word[j] + word[j + 2:])
        return tokens.render()


def _wordnet_synonyms(word: str) -> list[str]:
    from robustprune.eval.wordnet import synonyms

    return [s for s in synonyms(word) if is_word(s)]


class SynonymReplace(Augmenter):
    """EDA synonym replacement: ``max(1, alpha * words)`` non-stopwords each replaced by a random
    WordNet synonym."""

    def __init__(self, alpha: float = 0.1) -> None:
        self.alpha = _check_rate(alpha, "alpha")
        self.name = f"eda_synonym_replace(alpha={self.alpha})"

    def __call__(self, text: str, rng: random.Random) -> str:
        tokens = Tokens(text)
        words = [i for i in range(len(tokens)) if tokens.is_word(i)]
        candidates = [i for i in words if tokens.editable(i)]
        rng.shuffle(candidates)
        budget = _count(self.alpha, len(words))
        for i in candidates:
            if budget == 0:
                break
            options = _wordnet_synonyms(tokens[i])
            if options:
                tokens.replace(i, recover_case(rng.choice(options), tokens[i]))
                budget -= 1
        return tokens.render()


class RandomInsert(Augmenter):
    """EDA random insertion: ``max(1, alpha * words)`` times, a synonym of a random non-stopword is
    inserted at a random word position."""

    def __init__(self, alpha: float = 0.1) -> None:
        self.alpha = _check_rate(alpha, "alpha")
        self.name = f"eda_random_insert(alpha={self.alpha})"

    def __call__(self, text: str, rng: random.Random) -> str:
        tokens = Tokens(text)
        n_words = sum(tokens.is_word(i) for i in range(len(tokens)))
        for _ in range(_count(self.alpha, n_words)):
            sources = [i for i in range(len(tokens)) if tokens.editable(i)]
            rng.shuffle(sources)
            synonym = None
            for i in sources[:10]:  # like EDA, give up after ten words without a synonym
                options = _wordnet_synonyms(tokens[i])
                if options:
                    synonym = rng.choice(options)
                    break
            if synonym is None:
                break
            tokens.insert(rng.randint(0, len(tokens)), synonym)
        return tokens.render()


class RandomSwap(Augmenter):
    """EDA random swap: ``max(1, alpha * words)`` times, two random words exchange places."""

    def __init__(self, alpha: float = 0.1) -> None:
        self.alpha = _check_rate(alpha, "alpha")
        self.name = f"eda_random_swap(alpha={self.alpha})"

    def __call__(self, text: str, rng: random.Random) -> str:
        tokens = Tokens(text)
        words = [i for i in range(len(tokens)) if tokens.is_word(i)]
        if len(words) < 2:
            return text
        for _ in range(_count(self.alpha, len(words))):
            i, j = rng.sample(words, 2)
            tokens.swap(i, j)
        return tokens.render()


class RandomDelete(Augmenter):
    """EDA random deletion: each word is deleted with probability ``p``; one word always survives."""

    def __init__(self, p: float = 0.1) -> None:
        self.p = _check_rate(p, "p")
        self.name = f"eda_random_delete(p={self.p})"

    def __call__(self, text: str, rng: random.Random) -> str:
        tokens = Tokens(text)
        words = [i for i in range(len(tokens)) if tokens.is_word(i)]
        if len(words) < 2:
            return text
        doomed = [i for i in words if rng.random() < self.p]
        if len(doomed) == len(words):
            doomed.remove(rng.choice(doomed))
        for i in sorted(doomed, reverse=True):
            tokens.delete(i)
        return tokens.render()


class EDA(Augmenter):
    """Easy Data Augmentation: one of the four operations, chosen uniformly per text (those with a
    non-zero strength), as EDA's generator does for each augmented sentence."""

    def __init__(self, alpha_sr: float = 0.1, alpha_ri: float = 0.1, alpha_rs: float = 0.1,
                 p_rd: float = 0.1) -> None:
        ops: list[Augmenter] = []
        for cls, value, label in ((SynonymReplace, alpha_sr, "alpha_sr"),
                                  (RandomInsert, alpha_ri, "alpha_ri"),
                                  (RandomSwap, alpha_rs, "alpha_rs"), (RandomDelete, p_rd, "p_rd")):
            if _check_rate(value, label) > 0:
                ops.append(cls(value))
        if not ops:
            raise ValueError("EDA needs at least one of alpha_sr, alpha_ri, alpha_rs, p_rd above 0")
        self.operations = ops
        self.name = f"eda(sr={alpha_sr}, ri={alpha_ri}, rs={alpha_rs}, rd={p_rd})"

    def __call__(self, text: str, rng: random.Random) -> str:
        return rng.choice(self.operations)(text, rng)


class WordNetShift(Augmenter):
    """Each non-stopword with a WordNet synonym is replaced by a random one with probability ``rate``
    (at least one word when any has a synonym)."""

    def __init__(self, rate: float = 0.25) -> None:
        self.rate = _check_rate(rate, "rate")
        self.name = f"wordnet_swap(rate={self.rate})"

    def __call__(self, text: str, rng: random.Random) -> str:
        tokens = Tokens(text)
        options = {i: _wordnet_synonyms(tokens[i]) for i in range(len(tokens)) if tokens.editable(i)}
        eligible = [i for i, found in options.items() if found]
        chosen = [i for i in eligible if rng.random() < self.rate]
        if not chosen and eligible:
            chosen = [rng.choice(eligible)]
        for i in chosen:
            tokens.replace(i, recover_case(rng.choice(options[i]), tokens[i]))
        return tokens.render()


class EmbeddingShift(Augmenter):
    """Each non-stopword is replaced with probability ``rate`` by one of its ``k`` nearest word-vector
    neighbours with cosine >= ``min_cosine`` (alphabetic, non-stopword), chosen uniformly.

    Args:
        vectors: a :class:`~robustprune.eval.word_vectors.WordVectors`; default GloVe 6B 50-d
            (:func:`~robustprune.eval.word_vectors.load_glove`), loaded on first use.
    """

    def __init__(self, vectors: Any = None, rate: float = 0.25, k: int = 10, min_cosine: float = 0.7) -> None:
        self.rate = _check_rate(rate, "rate")
        if not isinstance(k, int) or k < 1:
            raise ValueError(f"k must be a positive int, got {k!r}")
        if not -1.0 <= min_cosine <= 1.0:
            raise ValueError(f"min_cosine must be in [-1, 1], got {min_cosine}")
        self._vectors, self.k, self.min_cosine = vectors, k, min_cosine
        self.name = f"embedding_swap(rate={self.rate}, k={k}, min_cosine={min_cosine})"

    @property
    def vectors(self) -> Any:
        if self._vectors is None:
            from robustprune.eval.word_vectors import load_glove

            self._vectors = load_glove()
        return self._vectors

    def augment_many(self, texts: Sequence[str], rngs: Sequence[random.Random]) -> list[str]:
        # draw the words to swap first, then look all their neighbours up in one batched search
        plans = []
        for text, rng in zip(texts, rngs):
            tokens = Tokens(text)
            eligible = [i for i in range(len(tokens)) if tokens.editable(i) and tokens[i] in self.vectors]
            chosen = [i for i in eligible if rng.random() < self.rate]
            if not chosen and eligible:
                chosen = [rng.choice(eligible)]
            plans.append((tokens, chosen, rng))
        queries = sorted({tokens[i].lower() for tokens, chosen, _ in plans for i in chosen})
        found = dict(zip(queries, self.vectors.nearest_many(queries, self.k, self.min_cosine)))
        out = []
        for tokens, chosen, rng in plans:
            for i in chosen:
                options = [w for w, _ in found[tokens[i].lower()] if w.isalpha() and not is_stopword(w)]
                if options:
                    tokens.replace(i, recover_case(rng.choice(options), tokens[i]))
            out.append(tokens.render())
        return out

    def __call__(self, text: str, rng: random.Random) -> str:
        return self.augment_many([text], [rng])[0]


# ---------------------------------------------------------------------------------------------------
# model-based shifts


ModelSource = str | tuple[Any, Any]


def _load_hf(source: ModelSource, kind: str, auto_class: str, purpose: str, device: str) -> tuple[Any, Any]:
    """(model, tokenizer) from a Hub id / local path, or an already loaded pair; clear RuntimeError."""
    if isinstance(source, tuple):
        if len(source) != 2:
            raise ValueError(f"{kind} must be a model id / path or a (model, tokenizer) pair")
        model, tokenizer = source
        return model.to(device).eval(), tokenizer
    if not isinstance(source, str) or not source:
        raise ValueError(f"{kind} must be a model id / path or a (model, tokenizer) pair, got {source!r}")
    import transformers

    try:
        tokenizer = transformers.AutoTokenizer.from_pretrained(source)
        model = getattr(transformers, auto_class).from_pretrained(source)
    except Exception as e:  # OSError offline / unknown id, ImportError for sentencepiece, ...
        raise RuntimeError(
            f"{purpose} needs the Hugging Face model {source!r}, which could not be loaded "
            f"({type(e).__name__}: {str(e).strip().splitlines()[0] if str(e).strip() else 'no details'}). "
            "It is downloaded from the Hub on first use: run once with network access (and without "
            "HF_HUB_OFFLINE=1), or pass a local directory or a (model, tokenizer) pair.") from e
    return model.to(device).eval(), tokenizer


class BackTranslation(Augmenter):
    """Round-trip translation through a pivot language with MarianMT (default English -> German -> English).

    Models load on first use (``Helsinki-NLP/opus-mt-en-de`` and ``Helsinki-NLP/opus-mt-de-en`` by
    default; any seq2seq id, local path or loaded ``(model, tokenizer)`` pair works). Beam search is
    deterministic; with ``sample=True`` the generator is seeded from the text's ``rng``. ``target_prefix``
    goes before every text sent to the forward model: the target-language token a multi-target model needs,
    e.g. ``">>es<<"`` with ``Helsinki-NLP/opus-mt-en-ROMANCE`` (back with ``Helsinki-NLP/opus-mt-ROMANCE-en``:
    TextAttack's back-translation augmenter, English -> Spanish -> English).

    Raises:
        RuntimeError: on first use, when a model cannot be loaded (which one, and why).
    """

    def __init__(self, forward: ModelSource = "Helsinki-NLP/opus-mt-en-de",
                 backward: ModelSource = "Helsinki-NLP/opus-mt-de-en", *, num_beams: int = 4,
                 sample: bool = False, max_new_tokens: int = 256, batch_size: int = 16,
                 target_prefix: str = "", device: str = "cpu") -> None:
        if num_beams < 1 or max_new_tokens < 1 or batch_size < 1:
            raise ValueError("num_beams, max_new_tokens and batch_size must be >= 1")
        if not isinstance(target_prefix, str):
            raise TypeError(f"target_prefix must be a string (e.g. '>>es<<'), got {target_prefix!r}")
        self.target_prefix = target_prefix
        self.sources = (forward, backward)
        self.num_beams, self.sample, self.max_new_tokens = num_beams, sample, max_new_tokens
        self.batch_size, self.device = batch_size, device
        self._models: list[tuple[Any, Any]] | None = None
        names = [s if isinstance(s, str) else type(s[0]).__name__ for s in self.sources]
        self.name = f"back_translation({names[0]} -> {names[1]})"

    def load(self) -> None:
        """Load both translation models now (otherwise done on first use)."""
        if self._models is None:
            self._models = [_load_hf(source, label, "AutoModelForSeq2SeqLM", "back-translation", self.device)
                            for source, label in zip(self.sources, ("forward", "backward"))]

    def _translate(self, pair: tuple[Any, Any], texts: list[str], seed: int) -> list[str]:
        import torch

        model, tokenizer = pair
        batch = tokenizer(texts, return_tensors="pt", padding=True, truncation=True).to(self.device)
        batch.pop("token_type_ids", None)
        with torch.no_grad(), torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            generated = model.generate(**batch, num_beams=1 if self.sample else self.num_beams,
                                       do_sample=self.sample, max_new_tokens=self.max_new_tokens)
        return [t.strip() for t in tokenizer.batch_decode(generated, skip_special_tokens=True)]

    def augment_many(self, texts: Sequence[str], rngs: Sequence[random.Random]) -> list[str]:
        self.load()
        assert self._models is not None
        out: list[str] = []
        for start in range(0, len(texts), self.batch_size):
            chunk = list(texts[start:start + self.batch_size])
            seed = rngs[start].getrandbits(63) if self.sample else 0
            if self.target_prefix:
                chunk = [f"{self.target_prefix} {text}" for text in chunk]
            pivot = self._translate(self._models[0], chunk, seed)
            out.extend(self._translate(self._models[1], pivot, seed + 1))
        return out

    def __call__(self, text: str, rng: random.Random) -> str:
        return self.augment_many([text], [rng])[0]


Operation = Literal["replace", "insert", "merge"]


class ClareShift(Augmenter):
    """CLARE-style contextual edits (Li et al., 2021) with a masked language model, as a shift.

    Each edit picks an operation among ``operations`` and a random position, masks it and samples a
    word from the masked LM's ``top_k`` whole-word predictions (ASCII letters only, sampled in
    proportion to their probability):
    *replace* a non-stopword, *insert* a word before a token, *merge* two adjacent words (at least one
    a non-stopword) into one. CLARE itself picks the edit that most hurts a victim model under a
    sentence-similarity constraint; as a distribution shift there is no victim, so edits are sampled.

    Args:
        masked_lm: a Hub id / local path of any masked LM (CLARE used ``distilroberta-base``) or a
            loaded ``(model, tokenizer)`` pair.
        operations: which edits to use.
        edits: edits per text.
        top_k: masked-LM predictions considered per edit.

    Raises:
        RuntimeError: on first use, when the model cannot be loaded (which one, and why).
    """

    def __init__(self, masked_lm: ModelSource = "distilroberta-base",
                 operations: Sequence[Operation] = ("replace", "insert", "merge"), *, edits: int = 1,
                 top_k: int = 20, device: str = "cpu") -> None:
        operations = tuple(operations)
        unknown = [op for op in operations if op not in ("replace", "insert", "merge")]
        if not operations or unknown:
            raise ValueError(f"operations must be a non-empty subset of ('replace', 'insert', 'merge'), "
                             f"got {operations}")
        if not isinstance(edits, int) or edits < 1 or not isinstance(top_k, int) or top_k < 1:
            raise ValueError(f"edits and top_k must be positive ints, got edits={edits!r}, top_k={top_k!r}")
        self.source, self.operations, self.edits = masked_lm, operations, edits
        self.top_k, self.device = top_k, device
        self._pair: tuple[Any, Any] | None = None
        label = masked_lm if isinstance(masked_lm, str) else type(masked_lm[0]).__name__
        self.name = f"clare({label}, {'/'.join(operations)}, edits={edits})"

    def load(self) -> None:
        """Load the masked LM now (otherwise done on first use)."""
        if self._pair is None:
            self._pair = _load_hf(self.source, "masked_lm", "AutoModelForMaskedLM", "the CLARE shift",
                                  self.device)
            if self._pair[1].mask_token is None:
                raise ValueError(f"tokenizer of {self.name} has no mask token: a masked LM is needed")

    def _positions(self, tokens: Tokens, op: str) -> list[int]:
        if op == "replace":
            return [i for i in range(len(tokens)) if tokens.editable(i)]
        if op == "insert":
            return list(range(len(tokens) + 1))
        return [i for i in range(len(tokens) - 1) if tokens.is_word(i) and tokens.is_word(i + 1)
                and (tokens.editable(i) or tokens.editable(i + 1))]

    def _candidates(self, masked_text: str, exclude: set[str], content_only: bool) -> list[tuple[str, float]]:
        import torch

        model, tokenizer = self._pair  # type: ignore[misc]
        batch = tokenizer(masked_text, return_tensors="pt", truncation=True).to(self.device)
        where = (batch["input_ids"][0] == tokenizer.mask_token_id).nonzero()
        if len(where) != 1:
            return []  # the mask fell past the model's maximum length
        with torch.no_grad():
            logits = model(**batch).logits[0, where[0, 0]]
        probs = torch.softmax(logits.float(), dim=-1)
        special = set(tokenizer.all_special_ids)
        out: list[tuple[str, float]] = []
        # a generous prefix of the ranking: sub-words, punctuation and specials are skipped below
        ranked = torch.topk(probs, min(len(probs), 50 * self.top_k)).indices.tolist()
        for token_id in ranked:
            if len(out) == self.top_k:
                break
            if token_id in special:
                continue
            piece = tokenizer.convert_ids_to_tokens(token_id)
            if piece.startswith("##"):
                continue  # WordPiece continuation, not a whole word
            word = tokenizer.convert_tokens_to_string([piece]).strip()
            if not (word.isascii() and word.isalpha()) or word.lower() in exclude:
                continue
            if content_only and is_stopword(word):
                continue
            out.append((word, float(probs[token_id])))
        return out

    def _edit(self, tokens: Tokens, rng: random.Random) -> bool:
        ops = [op for op in self.operations if self._positions(tokens, op)]
        if not ops:
            return False
        op = rng.choice(ops)
        i = rng.choice(self._positions(tokens, op))
        mask = self._pair[1].mask_token  # type: ignore[index]
        trial = copy.deepcopy(tokens)
        if op == "replace":
            original, exclude = trial[i], {trial[i].lower()}
            trial.replace(i, mask)
        elif op == "insert":
            original, exclude = "", set()
            trial.insert(i, mask)
        else:
            original, exclude = trial[i], {trial[i].lower(), trial[i + 1].lower()}
            trial.merge(i, mask)
        options = self._candidates(trial.render(), exclude, content_only=op != "insert")
        if not options:
            return False
        word = rng.choices([w for w, _ in options], weights=[p for _, p in options])[0]
        if op == "replace":
            tokens.replace(i, recover_case(word, original))
        elif op == "insert":
            tokens.insert(i, word)
        else:
            tokens.merge(i, recover_case(word, original))
        return True

    def __call__(self, text: str, rng: random.Random) -> str:
        self.load()
        tokens = Tokens(text)
        for _ in range(self.edits):
            self._edit(tokens, rng)
        return tokens.render()


# ---------------------------------------------------------------------------------------------------
# datasets


def apply_shift(dataset: TextDataset, augmenter: Augmenter, seed: int = 0,
                target: Literal["auto", "first", "second", "both"] = "auto", *, batch_size: int = 32,
                progress: bool = True) -> TextDataset:
    """``dataset`` with ``augmenter`` applied to every example: a shifted copy, labels unchanged.

    Each example's text gets its own ``random.Random`` seeded from ``(seed, index, field)``, so the
    result depends only on the seed (not on batching or on other examples) for the rule-based shifts.

    Args:
        target: which text to shift: ``"first"``, ``"second"`` (pair tasks), ``"both"``; ``"auto"`` is
            the second text of pairs (the hypothesis / second question, as in AdvGLUE-style
            perturbations) and the only text otherwise.
        batch_size: texts per :meth:`Augmenter.augment_many` call (model-based shifts batch).

    Returns:
        A new dataset named ``"<name> [<augmenter name>]"``; ``meta["original_text"]`` /
        ``meta["original_text_pair"]`` keep the unshifted texts (kept from an earlier shift if present).
    """
    if not isinstance(dataset, TextDataset):
        raise TypeError(f"dataset must be a TextDataset, got {type(dataset).__name__}")
    if not callable(augmenter):
        raise TypeError(f"augmenter must be callable as augmenter(text, rng), got {augmenter!r}")
    if target not in ("auto", "first", "second", "both"):
        raise ValueError(f"target must be 'auto', 'first', 'second' or 'both', got {target!r}")
    if target == "auto":
        target = "second" if dataset.is_pair else "first"
    if target in ("second", "both") and not dataset.is_pair:
        raise ValueError(f"target={target!r} needs a sentence-pair dataset; {dataset.name or 'this dataset'} "
                         "holds single sentences")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    many = getattr(augmenter, "augment_many", None)
    name = getattr(augmenter, "name", type(augmenter).__name__)
    fields = [("first", "texts", "original_text"), ("second", "text_pairs", "original_text_pair")]
    changes: dict[str, Any] = {}
    meta = dict(dataset.meta)
    for which, attribute, meta_key in fields:
        if target not in (which, "both"):
            continue
        source: list[str] = getattr(dataset, attribute)
        shifted: list[str] = []
        bar = tqdm(total=len(source), desc=f"shift {name}", disable=not progress, leave=False)
        for start in range(0, len(source), batch_size):
            chunk = source[start:start + batch_size]
            rngs = [random.Random(f"{seed}:{start + j}:{which}") for j in range(len(chunk))]
            shifted.extend(many(chunk, rngs) if many else [augmenter(t, r) for t, r in zip(chunk, rngs)])
            bar.update(len(chunk))
        bar.close()
        changes[attribute] = shifted
        meta.setdefault(meta_key, list(source))
    return replace(dataset, labels=list(dataset.labels), name=f"{dataset.name} [{name}]", meta=meta,
                   **changes)


# ---------------------------------------------------------------------------------------------------
# shifts by name (a config's ``evaluation.shifts``)


SHIFT_AUGMENTERS: dict[str, type[Augmenter]] = {
    "char_swap": CharSwap, "eda": EDA, "wordnet": WordNetShift, "embedding_swap": EmbeddingShift,
    "deletion": RandomDelete, "back_translation": BackTranslation, "clare": ClareShift,
}
# constructor arguments that are not settings of the shift: where it runs, a preloaded resource
_NOT_SETTINGS = ("self", "device", "vectors")


def shift_defaults(name: str) -> dict[str, Any]:
    """The settings of the shift ``name`` (:data:`SHIFT_AUGMENTERS`) and their defaults, read from its
    augmenter's constructor (sequences as lists): what a config may set under ``params``."""
    import inspect

    if name not in SHIFT_AUGMENTERS:
        raise ValueError(f"unknown shift {name!r}; expected one of {sorted(SHIFT_AUGMENTERS)}")
    out: dict[str, Any] = {}
    for parameter in inspect.signature(SHIFT_AUGMENTERS[name].__init__).parameters.values():
        if parameter.name in _NOT_SETTINGS or parameter.default is inspect.Parameter.empty:
            continue
        out[parameter.name] = list(parameter.default) if isinstance(parameter.default, tuple) else parameter.default
    return out


def make_shift(name: str, device: str | None = None, **params: Any) -> Augmenter:
    """The augmenter of the shift ``name`` with ``params`` (see :func:`shift_defaults`); the model-based
    ones (``back_translation``, ``clare``) run on ``device`` (None: their default, the CPU) and load their
    models on first use.

    Raises:
        ValueError: an unknown shift or setting, or a setting out of range (the augmenter's own check).
    """
    defaults = shift_defaults(name)
    unknown = sorted(set(params) - set(defaults))
    if unknown:
        raise ValueError(f"{name} has no setting {unknown[0]!r}; its settings are {sorted(defaults)}")
    cls = SHIFT_AUGMENTERS[name]
    import inspect

    if device is not None and "device" in inspect.signature(cls.__init__).parameters:
        params = {**params, "device": device}
    return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in params.items()})


__all__ = [
    "EDA",
    "SHIFT_AUGMENTERS",
    "Augmenter",
    "BackTranslation",
    "CharSwap",
    "ClareShift",
    "EmbeddingShift",
    "RandomDelete",
    "RandomInsert",
    "RandomSwap",
    "SynonymReplace",
    "Tokens",
    "WordNetShift",
    "apply_shift",
    "make_shift",
    "shift_defaults",
    "tokenize",
]
