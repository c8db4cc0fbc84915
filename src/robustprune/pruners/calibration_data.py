"""Calibration inputs for one-shot pruners (Wanda, SparseGPT) from any text source, with a fixed seed.

Two ways to turn texts into token batches:

- ``mode="first"``: the first ``num_samples`` texts, each truncated to ``seq_len`` tokens (special
  tokens included) and padded within its batch; ``attention_mask`` marks the real tokens. Suits
  sentence-level data such as GLUE SST-2 with an encoder model.
- ``mode="windows"``: the C4 / SparseGPT recipe. Each sample is a random window of exactly
  ``seq_len`` tokens (the tokenizer's own special tokens, e.g. ``[CLS] ... [SEP]`` or ``<s> ...``,
  included in that count) cut from a randomly drawn text; a text that is too short is extended with
  the texts that follow it (joined by the tokens of ``"\\n\\n"``). No padding.

The sequence length is capped here, independently of the model's maximum, and batches are dicts
ready for ``model(**batch)``. Texts come from :func:`robustprune.data.read_text_lines` (plain text or GLUE-style TSV),
:func:`robustprune.data.texts_from_hf_dataset` (needs the optional ``datasets`` package) or
:func:`dataset_calibration_texts`: a seeded sample of a labelled task set (a training split, or an
adversarial set, optionally restricted to some attack methods), each example rendered by a formatter,
e.g. the zero-shot prompt the model will be evaluated with
(``robustprune.eval.zero_shot.PromptTemplate.formatter``).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch

from robustprune.data.datasets import TextDataset

MODES = ("first", "windows")
# Hugging Face's sentinel for "no limit" is int(1e30); anything this large is not a real limit.
_NO_REAL_LIMIT = 10**12

ExampleFormatter = Callable[[str, "str | None", int], str]


def _plain_example(text: str, text_pair: str | None, label: int) -> str:
    return text if text_pair is None else f"{text}\n{text_pair}"


def dataset_calibration_texts(
    dataset: TextDataset,
    num_samples: int | None = 128,
    *,
    seed: int = 0,
    format: ExampleFormatter | None = None,
    methods: str | Sequence[str] | None = None,
    method_key: str = "method",
) -> list[str]:
    """Calibration texts drawn from a labelled task set (clean training split or adversarial set).

    Args:
        dataset: a :class:`robustprune.data.datasets.TextDataset` (single sentences or pairs).
        num_samples: examples to draw without replacement (a seeded random permutation); None takes
            every (selected) example in dataset order.
        seed: seed of the ``torch.Generator`` that draws the examples.
        format: ``f(text, text_pair, label) -> str`` rendering one example, e.g.
            ``get_template("sst2").formatter(tokenizer)`` for the zero-shot prompt followed by the gold
            answer. Default: the sentence, or both sentences on two lines.
        methods: keep only examples whose ``meta[method_key]`` is one of these (adversarial sets:
            the attack that made each example).
        method_key: metadata column holding the method.

    Returns:
        The formatted texts, ready for :func:`calibration_batches` (``mode="first"`` keeps one example
        per sample; pass ``add_special_tokens=False`` when ``format`` writes a chat template's own
        special tokens).

    Raises:
        TypeError: ``dataset`` lacks ``texts`` / ``labels``, or ``format`` returned a non-string.
        ValueError: ``num_samples`` < 1 or more than the (selected) examples, ``methods`` without a
            ``meta[method_key]`` column or matching nothing, an empty dataset.
    """
    for attribute in ("texts", "labels"):
        if not hasattr(dataset, attribute):
            raise TypeError("dataset must be a TextDataset (with texts and labels), "
                            f"got {type(dataset).__name__}")
    name = getattr(dataset, "name", "") or "dataset"
    indices = list(range(len(dataset.texts)))
    if methods is not None:
        wanted = {methods} if isinstance(methods, str) else set(methods)
        meta = getattr(dataset, "meta", {}) or {}
        if method_key not in meta:
            raise ValueError(f"methods={sorted(wanted)} given but {name} has no meta column {method_key!r} "
                             f"(columns: {sorted(meta)})")
        indices = [i for i in indices if meta[method_key][i] in wanted]
        if not indices:
            raise ValueError(f"no example of {name} has {method_key} in {sorted(wanted)}; present: "
                             f"{sorted({str(v) for v in meta[method_key]})}")
    if not indices:
        raise ValueError(f"empty calibration set: {name} has no examples")
    if num_samples is not None:
        if not isinstance(num_samples, int) or num_samples < 1:
            raise ValueError(f"empty calibration set: num_samples={num_samples!r}, need an int >= 1 or None")
        if num_samples > len(indices):
            raise ValueError(f"num_samples={num_samples} exceeds the {len(indices)} available example(s) "
                             f"of {name}")
        generator = torch.Generator().manual_seed(seed)
        order = torch.randperm(len(indices), generator=generator)[:num_samples].tolist()
        indices = [indices[i] for i in order]
    pairs = getattr(dataset, "text_pairs", None)
    render = format or _plain_example
    texts = []
    for i in indices:
        text = render(dataset.texts[i], None if pairs is None else pairs[i], dataset.labels[i])
        if not isinstance(text, str):
            raise TypeError(f"format must return a str, got {type(text).__name__} for example {i}")
        texts.append(text)
    return texts


def auto_mode(texts: Sequence[str], num_samples: int) -> str:
    """The mode that suits a text source of unknown shape: ``"first"`` (one text per sample) when it
    holds at least ``num_samples`` texts, else ``"windows"`` (``num_samples`` windows cut from its
    concatenated texts)."""
    return "first" if len(texts) >= num_samples else "windows"


def _real_max_length(tokenizer: Any) -> int | None:
    limit = getattr(tokenizer, "model_max_length", None)
    if isinstance(limit, int) and 0 < limit < _NO_REAL_LIMIT:
        return limit
    return None


def _special_affixes(tokenizer: Any) -> tuple[list[int], list[int]]:
    """Token ids the tokenizer puts before and after a single sequence (``[CLS]``/``[SEP]``, ``<s>``...)."""
    for probe in ("hello world", "a", "the"):
        plain = tokenizer(probe, add_special_tokens=False)["input_ids"]
        full = tokenizer(probe, add_special_tokens=True)["input_ids"]
        if not plain:
            continue
        for start in range(len(full) - len(plain) + 1):
            if full[start:start + len(plain)] == plain:
                return list(full[:start]), list(full[start + len(plain):])
    return [], []


def _pad_id(tokenizer: Any) -> int:
    for attr in ("pad_token_id", "eos_token_id", "unk_token_id"):
        value = getattr(tokenizer, attr, None)
        if isinstance(value, int):
            return value
    return 0


def _padded(rows: Sequence[Sequence[int]], width: int, fill: int, left: bool) -> torch.Tensor:
    out = torch.full((len(rows), width), fill, dtype=torch.long)
    for i, row in enumerate(rows):
        if len(row):
            if left:
                out[i, width - len(row):] = torch.tensor(row, dtype=torch.long)
            else:
                out[i, :len(row)] = torch.tensor(row, dtype=torch.long)
    return out


def _check_args(texts: Sequence[str], num_samples: int, seq_len: int, batch_size: int, mode: str,
                tokenizer: Any) -> None:
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
    if num_samples < 1:
        raise ValueError(f"empty calibration set: num_samples={num_samples}, need at least 1")
    if isinstance(texts, str):
        raise TypeError("texts must be a sequence of strings, not one string")
    if len(texts) == 0:
        raise ValueError("empty calibration set: no texts given")
    if seq_len < 1:
        raise ValueError(f"seq_len must be >= 1, got {seq_len}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    limit = _real_max_length(tokenizer)
    if limit is not None and seq_len > limit:
        raise ValueError(f"seq_len={seq_len} exceeds the tokenizer's model_max_length={limit}; "
                         f"pass seq_len <= {limit}")


def _first_batches(tokenizer: Any, texts: Sequence[str], num_samples: int, seq_len: int,
                   batch_size: int, add_special_tokens: bool = True) -> list[dict[str, torch.Tensor]]:
    if len(texts) < num_samples:
        raise ValueError(f"mode='first' needs num_samples={num_samples} texts but only {len(texts)} were "
                         "given; lower num_samples or use mode='windows'")
    pad_id = _pad_id(tokenizer)
    left = getattr(tokenizer, "padding_side", "right") == "left"
    batches = []
    for start in range(0, num_samples, batch_size):
        chunk = list(texts[start:min(start + batch_size, num_samples)])
        # Pad by hand: tokenizers without a pad token (GPT-2, Llama) would refuse padding=True,
        # and the caller's tokenizer must not be mutated.
        enc = tokenizer(chunk, truncation=True, max_length=seq_len, add_special_tokens=add_special_tokens)
        lengths = [len(row) for row in enc["input_ids"]]
        width = max(lengths)
        batch = {"input_ids": _padded(enc["input_ids"], width, pad_id, left),
                 "attention_mask": _padded([[1] * n for n in lengths], width, 0, left)}
        if "token_type_ids" in enc:
            batch["token_type_ids"] = _padded(enc["token_type_ids"], width, 0, left)
        batches.append(batch)
    return batches


def _window_batches(tokenizer: Any, texts: Sequence[str], num_samples: int, seq_len: int, batch_size: int,
                    seed: int, add_special_tokens: bool = True) -> list[dict[str, torch.Tensor]]:
    prefix, suffix = _special_affixes(tokenizer) if add_special_tokens else ([], [])
    window = seq_len - len(prefix) - len(suffix)
    if window < 1:
        raise ValueError(f"seq_len={seq_len} leaves no room for text: the tokenizer adds "
                         f"{len(prefix) + len(suffix)} special token(s) per sequence")
    separator = list(tokenizer("\n\n", add_special_tokens=False)["input_ids"])
    cache: dict[int, list[int]] = {}

    def tokens(index: int) -> list[int]:
        if index not in cache:
            cache[index] = list(tokenizer(texts[index], add_special_tokens=False)["input_ids"])
        return cache[index]

    generator = torch.Generator().manual_seed(seed)
    samples: list[list[int]] = []
    for _ in range(num_samples):
        first = int(torch.randint(len(texts), (1,), generator=generator))
        ids = tokens(first)
        index = first
        while len(ids) < window:  # too short: extend with the texts that follow, wrapping around
            index = (index + 1) % len(texts)
            if index == first:
                raise ValueError(f"the texts hold {len(ids)} tokens in total (with separators), fewer than "
                                 f"one window of {window} (seq_len={seq_len} minus special tokens); "
                                 "give more text or lower seq_len")
            ids = ids + separator + tokens(index)
        start = int(torch.randint(len(ids) - window + 1, (1,), generator=generator))
        samples.append(prefix + ids[start:start + window] + suffix)
    batches = []
    for start in range(0, num_samples, batch_size):
        input_ids = torch.tensor(samples[start:start + batch_size], dtype=torch.long)
        batches.append({"input_ids": input_ids, "attention_mask": torch.ones_like(input_ids)})
    return batches


def calibration_batches(
    tokenizer: Any,
    texts: Sequence[str],
    num_samples: int = 128,
    seq_len: int = 128,
    batch_size: int = 8,
    mode: str = "first",
    seed: int = 0,
    add_special_tokens: bool = True,
) -> list[dict[str, torch.Tensor]]:
    """Tokenized calibration batches, deterministic for a given ``seed``.

    Args:
        tokenizer: a Hugging Face tokenizer (not modified; tokenizers without a pad token are fine).
        texts: calibration texts, e.g. from :func:`read_text_lines`.
        num_samples: number of sequences in total (the default 128 follows SparseGPT).
        seq_len: maximum tokens per sequence in ``"first"`` mode, exact length in ``"windows"`` mode,
            special tokens included. Independent of (but at most) the tokenizer's ``model_max_length``.
        batch_size: sequences per batch (the last batch may be smaller).
        mode: ``"first"`` (first ``num_samples`` texts, truncated, padded per batch) or ``"windows"``
            (random ``seq_len``-token windows, C4 / SparseGPT style, no padding).
        seed: seed of the ``torch.Generator`` drawing texts and window offsets (``"windows"`` only;
            ``"first"`` is deterministic by construction).
        add_special_tokens: let the tokenizer add its special tokens (``[CLS]``/``<s>``...). False for
            texts that already carry them, e.g. prompts written with a chat template.

    Returns:
        A list of dicts with ``input_ids`` and ``attention_mask`` (and ``token_type_ids`` when the
        tokenizer produces them in ``"first"`` mode), int64 CPU tensors of shape ``[batch, length]``.

    Raises:
        ValueError: ``num_samples < 1`` or no texts ("empty calibration set"), ``seq_len < 1``,
            ``seq_len`` above a finite ``tokenizer.model_max_length``, an unknown ``mode``, too few
            texts for ``"first"`` or too little text for one window.
    """
    _check_args(texts, num_samples, seq_len, batch_size, mode, tokenizer)
    if mode == "first":
        return _first_batches(tokenizer, texts, num_samples, seq_len, batch_size, add_special_tokens)
    return _window_batches(tokenizer, texts, num_samples, seq_len, batch_size, seed, add_special_tokens)


__all__ = ["MODES", "auto_mode", "calibration_batches", "dataset_calibration_texts"]
