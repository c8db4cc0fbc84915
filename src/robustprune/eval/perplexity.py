"""Perplexity of a causal LM on a text, over non-overlapping windows, as the pruning literature reports it.

The recipe of SparseGPT and Wanda (WikiText-2 / C4 perplexity): join the texts with ``"\\n\\n"``, tokenize
the whole string once (the tokenizer's special tokens, e.g. Llama's ``<s>``, appear only at its very
start), cut the token stream into ``len // seq_len`` non-overlapping windows of exactly ``seq_len``
tokens (the remainder is dropped), score every window independently (no context carried over) and
report ``exp`` of the mean next-token negative log-likelihood. Each window predicts ``seq_len - 1``
tokens; averaging over tokens therefore equals the references' average of per-window mean losses.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from robustprune.data.datasets import TextDataset
from robustprune.data.texts import read_text_lines
from robustprune.models import require_causal_lm

DEFAULT_SEQ_LEN = 2048  # the window of the SparseGPT / Wanda evaluations (Llama, OPT)
SEPARATOR = "\n\n"


@dataclass(frozen=True)
class PerplexityResult:
    """Perplexity over non-overlapping windows.

    Attributes:
        perplexity: ``exp(nll)``.
        nll: mean next-token negative log-likelihood in nats over all predicted tokens.
        tokens: number of predicted tokens, ``windows * (seq_len - 1)``.
        windows: number of windows scored.
        seq_len: tokens per window.
        dropped_tokens: tokens of the text left unscored (the tail after the last full window, plus
            any windows beyond ``max_windows``).
    """

    perplexity: float
    nll: float
    tokens: int
    windows: int
    seq_len: int
    dropped_tokens: int


def _model_max_positions(model: nn.Module) -> int | None:
    config = getattr(model, "config", None)
    for attr in ("max_position_embeddings", "n_positions", "max_sequence_length"):
        value = getattr(config, attr, None)
        if isinstance(value, int) and value > 0:
            return value
    return None


def _input_device(model: nn.Module) -> torch.device:
    embeddings = model.get_input_embeddings()
    return embeddings.weight.device


def token_perplexity(
    model: nn.Module,
    input_ids: torch.Tensor,
    *,
    seq_len: int | None = None,
    batch_size: int = 1,
    max_windows: int | None = None,
    progress: bool = True,
) -> PerplexityResult:
    """Perplexity of ``model`` on a token stream (see the module docs for the recipe).

    Args:
        model: a Hugging Face causal LM (checked with :func:`robustprune.models.require_causal_lm`).
        input_ids: 1-D int tensor (or ``[1, n]``) of token ids.
        seq_len: tokens per window; None: ``min(2048, the model's maximum positions)``.
        batch_size: windows per forward pass. Memory for the logits is
            ``batch_size * seq_len * vocab * 4`` bytes.
        max_windows: score only the first this many windows (None: all).
        progress: show a tqdm progress bar over windows.

    Raises:
        TypeError: ``model`` is not a causal LM.
        ValueError: a bad ``seq_len`` / ``batch_size`` / ``max_windows``, ``seq_len`` above the
            model's maximum positions, or fewer tokens than one window.
    """
    require_causal_lm(model)
    if not isinstance(input_ids, torch.Tensor) or input_ids.dtype not in (torch.int64, torch.int32):
        raise TypeError(f"input_ids must be an int64/int32 tensor, got {type(input_ids).__name__}"
                        f"{'' if not isinstance(input_ids, torch.Tensor) else f' of {input_ids.dtype}'}")
    if input_ids.dim() == 2 and input_ids.shape[0] == 1:
        input_ids = input_ids[0]
    if input_ids.dim() != 1:
        raise ValueError(f"input_ids must be 1-D (one token stream), got shape {tuple(input_ids.shape)}")
    limit = _model_max_positions(model)
    if seq_len is None:
        seq_len = min(DEFAULT_SEQ_LEN, limit) if limit is not None else DEFAULT_SEQ_LEN
    if not isinstance(seq_len, int) or seq_len < 2:
        raise ValueError("seq_len must be an int >= 2 (a window must predict at least one token), "
                         f"got {seq_len!r}")
    if limit is not None and seq_len > limit:
        raise ValueError(f"seq_len={seq_len} exceeds the model's maximum of {limit} positions")
    if not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be an int >= 1, got {batch_size!r}")
    if max_windows is not None and (not isinstance(max_windows, int) or max_windows < 1):
        raise ValueError(f"max_windows must be an int >= 1 or None, got {max_windows!r}")
    available = input_ids.numel() // seq_len
    if available == 0:
        raise ValueError(f"the text has {input_ids.numel()} tokens, fewer than one window of "
                         f"seq_len={seq_len}; give more text or lower seq_len")
    windows = available if max_windows is None else min(available, max_windows)
    stream = input_ids[:windows * seq_len].view(windows, seq_len).to(torch.int64)

    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=windows, desc="perplexity", unit="window")
    device = _input_device(model)
    was_training = model.training
    total_nll = 0.0
    model.eval()
    try:
        with torch.inference_mode():
            for start in range(0, windows, batch_size):
                chunk = stream[start:start + batch_size].to(device)
                logits = model(input_ids=chunk, use_cache=False).logits
                # fp32 log-softmax: half-precision logits lose the tail of the distribution.
                loss = F.cross_entropy(logits[:, :-1].flatten(0, 1).float(), chunk[:, 1:].flatten(),
                                       reduction="sum")
                total_nll += float(loss)
                if bar is not None:
                    bar.update(chunk.shape[0])
                    done = (start + chunk.shape[0]) * (seq_len - 1)
                    bar.set_postfix(ppl=f"{math.exp(total_nll / done):.2f}")
    finally:
        model.train(was_training)
        if bar is not None:
            bar.close()
    tokens = windows * (seq_len - 1)
    nll = total_nll / tokens
    return PerplexityResult(perplexity=math.exp(nll), nll=nll, tokens=tokens, windows=windows,
                            seq_len=seq_len, dropped_tokens=input_ids.numel() - windows * seq_len)


def _join(text: str | Sequence[str] | TextDataset, separator: str) -> str:
    if isinstance(text, str):
        joined = text
    elif isinstance(text, TextDataset):
        pairs = text.text_pairs or [None] * len(text)
        joined = separator.join(a if b is None else f"{a} {b}" for a, b in zip(text.texts, pairs))
    elif isinstance(text, Sequence) and all(isinstance(t, str) for t in text):
        joined = separator.join(text)
    else:
        raise TypeError("text must be a string, a sequence of strings or a TextDataset, "
                        f"got {type(text).__name__}")
    if not joined.strip():
        raise ValueError("text is empty: nothing to score")
    return joined


def perplexity(
    model: nn.Module,
    tokenizer: Any,
    text: str | Sequence[str] | TextDataset,
    *,
    seq_len: int | None = None,
    batch_size: int = 1,
    max_windows: int | None = None,
    separator: str = SEPARATOR,
    progress: bool = True,
) -> PerplexityResult:
    """Perplexity of a causal LM on a text, a list of texts (a dataset split) or a :class:`TextDataset`.

    Texts are joined with ``separator`` (``"\\n\\n"`` as in the WikiText-2 / C4 evaluations; a
    dataset's sentence pairs are joined by a space first) and tokenized once, special tokens
    included; then :func:`token_perplexity` scores non-overlapping windows of ``seq_len`` tokens.

    Example: ``perplexity(model, tok, texts_from_hf_dataset("wikitext", "test", config=
    "wikitext-2-raw-v1"), seq_len=2048)`` when the network allows, or :func:`file_perplexity`.
    """
    joined = _join(text, separator)
    # verbose=False: a long text is expected to exceed model_max_length, it is cut into windows here.
    ids = tokenizer(joined, add_special_tokens=True, verbose=False)["input_ids"]
    return token_perplexity(model, torch.tensor(ids, dtype=torch.int64), seq_len=seq_len,
                            batch_size=batch_size, max_windows=max_windows, progress=progress)


def file_perplexity(
    model: nn.Module,
    tokenizer: Any,
    path: str | Path,
    *,
    column: str | None = None,
    seq_len: int | None = None,
    batch_size: int = 1,
    max_windows: int | None = None,
    progress: bool = True,
) -> PerplexityResult:
    """Perplexity on a text file (read whole, as written) or on one column of a GLUE-style TSV
    (its rows joined with ``"\\n\\n"``). Other arguments as :func:`perplexity`.

    Raises:
        FileNotFoundError: ``path`` does not exist.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"path: text file not found: {str(path)!r}")
    text: str | list[str]
    text = path.read_text(encoding="utf-8") if column is None else read_text_lines(path, column)
    return perplexity(model, tokenizer, text, seq_len=seq_len, batch_size=batch_size, max_windows=max_windows,
                      progress=progress)


__all__ = ["PerplexityResult", "file_perplexity", "perplexity", "token_perplexity"]
