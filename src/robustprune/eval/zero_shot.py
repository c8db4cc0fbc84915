"""Zero-shot prompted classification with decoder LMs on GLUE-format and AdvGLUE-style data.

Every example is rendered with a :class:`PromptTemplate` (one per GLUE task in :data:`GLUE_TEMPLATES`,
single sentences and sentence pairs) into a user message; a tokenizer with a chat template wraps it
as a chat turn with the assistant's turn opened; the template's ``answer_prefix`` then starts the answer.
Two ways to read the model's answer:

- ``mode="logits"`` (default): one forward pass; each label's score is the log-probability mass of
  its label word as the next token, summed over the spellings ``word``, ``" word"``, ``Word`` and
  ``" Word"`` (only their first tokens: tokenizers split a word differently with and without a
  leading space, and a chat model may start its answer either way). The best label is predicted.
  Label words whose first tokens collide are rejected up front: the template cannot express them.
- ``mode="generate"``: greedy decoding of ``max_new_tokens`` tokens, then the label word mentioned
  first (whole words, any case) is the prediction; answers naming none are *unparseable*, counted
  separately and scored as wrong.

Accuracy is reported overall, as the class balance of the predictions (a pruned model collapsing to
one class scores near the majority rate, and *above* chance on adversarial sets built against the
dense model) and per value of a metadata column, by default ``meta["method"]`` (which attack made
each adversarial example).
"""

from __future__ import annotations

import inspect
import math
import re
import string
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from robustprune.data.datasets import TextDataset
from robustprune.models import require_causal_lm

FIELDS = ("text", "text_pair")
MODES = ("logits", "generate")
UNPARSEABLE = -1


@dataclass(frozen=True)
class PromptTemplate:
    """How one task is asked and answered.

    Attributes:
        instruction: the user message, a ``str.format`` string with the field ``{text}`` and, for
            sentence-pair tasks, ``{text_pair}``. No other fields.
        label_words: the answer word of each class, index = label id (e.g. ``("negative", "positive")``).
        system: system message for chat templates; None keeps the chat template's own default.
        answer_prefix: the start of the answer, written for the model: after the opened assistant turn
            with a chat template, after ``"\\n"`` without one; the label word is expected next. Small
            chat models tend to open with a sentence ("The sentiment of this review is negative"), so
            the prefix makes the label word the very next token.
    """

    instruction: str
    label_words: tuple[str, ...]
    system: str | None = None
    answer_prefix: str = "Answer:"

    def __post_init__(self) -> None:
        if not isinstance(self.instruction, str):
            raise TypeError(f"instruction must be a str, got {type(self.instruction).__name__}")
        try:
            parsed = string.Formatter().parse(self.instruction)
            fields = {name for _, name, _, _ in parsed if name is not None}
        except ValueError as exc:
            raise ValueError(f"instruction is not a valid format string: {exc}") from None
        unknown = sorted(fields - set(FIELDS))
        if unknown:
            raise ValueError(f"prompt template field(s) {unknown} are not known; a template may use "
                             f"{{text}} and {{text_pair}} only")
        if "text" not in fields:
            raise ValueError("prompt template is missing the field {text} (where the example's sentence "
                             f"goes): {self.instruction!r}")
        words = tuple(self.label_words) if not isinstance(self.label_words, str) else (self.label_words,)
        object.__setattr__(self, "label_words", words)
        if len(words) < 2:
            raise ValueError(f"label_words must name at least 2 classes, got {list(words)}")
        bad = [w for w in words if not isinstance(w, str) or not w.strip()]
        if bad:
            raise ValueError(f"label_words must be non-empty strings, got {bad}")
        folded = [w.strip().lower() for w in words]
        if len(set(folded)) != len(folded):
            raise ValueError(f"label_words must differ (ignoring case and spaces), got {list(words)}")

    @property
    def is_pair(self) -> bool:
        """The template has a ``{text_pair}`` field (a sentence-pair task)."""
        return any(name == "text_pair" for _, name, _, _ in string.Formatter().parse(self.instruction))

    @property
    def num_labels(self) -> int:
        return len(self.label_words)

    def render(self, text: str, text_pair: str | None = None) -> str:
        """The user message for one example."""
        if self.is_pair and text_pair is None:
            raise ValueError("this template asks about a sentence pair ({text_pair}); text_pair is missing")
        if not self.is_pair and text_pair is not None:
            raise ValueError("this template has no {text_pair} field; it cannot show a second sentence")
        return self.instruction.format(text=text, text_pair=text_pair)

    def prompt(self, tokenizer: Any, text: str, text_pair: str | None = None,
               chat: bool | None = None) -> str:
        """The full prompt string: a chat turn when ``chat`` (default: the tokenizer has a chat
        template), else the message; either way followed by ``answer_prefix``."""
        message = self.render(text, text_pair)
        if _use_chat(tokenizer, chat):
            turns = ([{"role": "system", "content": self.system}] if self.system is not None else [])
            turns.append({"role": "user", "content": message})
            opened = tokenizer.apply_chat_template(turns, tokenize=False, add_generation_prompt=True)
            return opened + self.answer_prefix
        return f"{message}\n{self.answer_prefix}" if self.answer_prefix else message

    def formatter(self, tokenizer: Any, with_answer: bool = True, chat: bool | None = None
                  ) -> Callable[[str, str | None, int], str]:
        """``f(text, text_pair, label) -> str`` rendering calibration text with this prompt, followed by
        the label word when ``with_answer`` (see
        :func:`robustprune.pruners.calibration_data.dataset_calibration_texts`)."""
        chat_mode = _use_chat(tokenizer, chat)

        def format_example(text: str, text_pair: str | None, label: int) -> str:
            prompt = self.prompt(tokenizer, text, text_pair, chat=chat_mode)
            if not with_answer:
                return prompt
            word = self.label_words[label]
            return f"{prompt} {word}" if self.answer_prefix else prompt + word

        return format_example


_YES_NO = "Answer with one word: yes or no."
GLUE_TEMPLATES: dict[str, PromptTemplate] = {
    "sst2": PromptTemplate(
        "What is the sentiment of this review? Answer positive or negative.\nReview: {text}",
        ("negative", "positive"), answer_prefix="The sentiment of this review is"),
    "cola": PromptTemplate(
        "Is the following sentence grammatically acceptable English?\n\nSentence: {text}\n\n" + _YES_NO,
        ("no", "yes")),
    "mrpc": PromptTemplate(
        "Do these two sentences say the same thing?\n\nSentence 1: {text}\nSentence 2: {text_pair}\n\n"
        + _YES_NO,
        ("no", "yes")),
    "qqp": PromptTemplate(
        "Do these two questions ask the same thing?\n\nQuestion 1: {text}\nQuestion 2: {text_pair}\n\n"
        + _YES_NO,
        ("no", "yes")),
    "mnli": PromptTemplate(
        "Premise: {text}\nHypothesis: {text_pair}\n\nIf the premise is true, is the hypothesis true? "
        "Answer with one word: yes, maybe or no.", ("yes", "maybe", "no")),
    "qnli": PromptTemplate(
        "Question: {text}\nSentence: {text_pair}\n\nDoes the sentence contain the answer to the question? "
        + _YES_NO, ("yes", "no")),
    "rte": PromptTemplate(
        "Sentence 1: {text}\nSentence 2: {text_pair}\n\nIf sentence 1 is true, must sentence 2 be true? "
        + _YES_NO, ("yes", "no")),
    "wnli": PromptTemplate(
        "Sentence 1: {text}\nSentence 2: {text_pair}\n\nIf sentence 1 is true, must sentence 2 be true? "
        + _YES_NO, ("no", "yes")),
}
"""Templates per GLUE task; label order follows GLUE / AdvGLUE ids (MNLI: entailment, neutral,
contradiction; QNLI and RTE: entailment, not_entailment; WNLI: not_entailment, entailment)."""

_ALIASES = {"sst-2": "sst2", "mnli-mm": "mnli", "mnli_mismatched": "mnli", "mnli-m": "mnli",
            "mnli_matched": "mnli", "sts-b": "stsb"}


def get_template(task: str) -> PromptTemplate:
    """The built-in template of a GLUE / AdvGLUE task (``"sst2"``, ``"qqp"``, ``"mnli"``, ``"mnli-mm"``,
    ...)."""
    key = _ALIASES.get(task.lower(), task.lower()) if isinstance(task, str) else task
    if key not in GLUE_TEMPLATES:
        raise ValueError(f"task {task!r} has no built-in prompt template; known tasks: "
                         f"{sorted(GLUE_TEMPLATES)} (STS-B is a regression task); or pass a PromptTemplate")
    return GLUE_TEMPLATES[key]


def _use_chat(tokenizer: Any, chat: bool | None) -> bool:
    has_template = bool(getattr(tokenizer, "chat_template", None))
    if chat and not has_template:
        raise ValueError("chat=True but the tokenizer has no chat template")
    return has_template if chat is None else bool(chat)


def _spellings(word: str) -> list[str]:
    word = word.strip()
    forms = {word, word.lower(), word[:1].upper() + word[1:]}
    return [prefix + form for form in sorted(forms) for prefix in ("", " ")]


def label_token_ids(tokenizer: Any, label_words: Sequence[str]) -> list[list[int]]:
    """Per label, the distinct first token ids of its spellings (as is, lower case, capitalised; with
    and without a leading space).

    Raises:
        ValueError: two labels share a first token (the next-token logits cannot tell them apart), or
            a label word tokenizes to nothing.
    """
    ids: list[list[int]] = []
    owner: dict[int, int] = {}
    for label, word in enumerate(label_words):
        firsts: list[int] = []
        for spelling in _spellings(word):
            tokens = tokenizer(spelling, add_special_tokens=False)["input_ids"]
            if tokens and tokens[0] not in firsts:
                firsts.append(tokens[0])
        if not firsts:
            raise ValueError(f"label word {word!r} tokenizes to no tokens")
        for token in firsts:
            if token in owner and owner[token] != label:
                other = label_words[owner[token]]
                raise ValueError(f"label words {other!r} and {word!r} both start with token {token} "
                                 f"({tokenizer.convert_ids_to_tokens(token)!r}): the template cannot express "
                                 "this label set by next-token scoring; choose label words that start "
                                 "differently")
            owner[token] = label
        ids.append(firsts)
    return ids


def parse_answer(answer: str, label_words: Sequence[str]) -> int:
    """The label whose word ``answer`` mentions first (whole words, any case), or -1 if none is named."""
    best, best_pos, best_len = UNPARSEABLE, math.inf, 0
    for label, word in enumerate(label_words):
        pattern = r"(?<![\w])" + re.escape(word.strip()) + r"(?![\w])"
        match = re.search(pattern, answer, flags=re.IGNORECASE)
        if match and (match.start() < best_pos or (match.start() == best_pos and len(word) > best_len)):
            best, best_pos, best_len = label, match.start(), len(word)
    return best


@dataclass(frozen=True)
class GroupAccuracy:
    """Accuracy over the examples sharing one metadata value (e.g. one attack method)."""

    correct: int
    total: int
    unparseable: int = 0

    @property
    def accuracy(self) -> float:
        return self.correct / self.total if self.total else float("nan")


@dataclass(frozen=True)
class ZeroShotResult:
    """Zero-shot accuracy of a decoder LM on one dataset.

    Attributes:
        accuracy: ``correct / total``; unparseable answers count as wrong.
        correct: examples predicted right.
        total: examples scored.
        unparseable: ``mode="generate"`` answers that name no label word (0 in ``"logits"`` mode).
        predictions: predicted label per example, -1 for an unparseable answer.
        labels: the gold labels.
        prediction_counts: how often each class was predicted (index = label id).
        groups: accuracy per value of ``meta[group_by]`` (empty when the dataset has no such column).
        mode: ``"logits"`` or ``"generate"``.
        scores: ``"logits"`` mode: ``[total, num_labels]`` log-probabilities of the label words.
        answers: ``"generate"`` mode: the decoded answers.
    """

    accuracy: float
    correct: int
    total: int
    unparseable: int
    predictions: list[int]
    labels: list[int]
    prediction_counts: list[int]
    groups: dict[str, GroupAccuracy] = field(default_factory=dict)
    mode: str = "logits"
    scores: torch.Tensor | None = None
    answers: list[str] | None = None

    @property
    def majority_rate(self) -> float:
        """Fraction of examples given the most frequent predicted class (1.0 = collapsed to one class)."""
        return max(self.prediction_counts) / self.total if self.total else float("nan")


def _check_inputs(model: nn.Module, dataset: TextDataset, template: PromptTemplate, mode: str,
                  batch_size: int, max_new_tokens: int) -> None:
    require_causal_lm(model)
    if not isinstance(dataset, TextDataset):
        raise TypeError(f"dataset must be a TextDataset, got {type(dataset).__name__}")
    if len(dataset) == 0:
        raise ValueError(f"dataset {dataset.name!r} is empty")
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
    if not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be an int >= 1, got {batch_size!r}")
    if mode == "generate" and (not isinstance(max_new_tokens, int) or max_new_tokens < 1):
        raise ValueError(f"max_new_tokens must be an int >= 1, got {max_new_tokens!r}")
    name = dataset.name or "dataset"
    if dataset.is_pair and not template.is_pair:
        raise ValueError(f"{name} holds sentence pairs but the prompt template has no {{text_pair}} field")
    if template.is_pair and not dataset.is_pair:
        raise ValueError(f"the prompt template has a {{text_pair}} field but {name} holds single sentences")
    if dataset.num_labels != template.num_labels:
        raise ValueError(f"{name} has {dataset.num_labels} labels but the template's label_words "
                         f"{list(template.label_words)} express {template.num_labels}: the template cannot "
                         "express this label set")


def _tokenize_prompts(tokenizer: Any, prompts: Sequence[str], chat: bool) -> list[list[int]]:
    # A chat template writes its own special tokens (BOS included where the model wants one).
    encoded = tokenizer(list(prompts), add_special_tokens=not chat)["input_ids"]
    empty = [i for i, ids in enumerate(encoded) if not ids]
    if empty:
        raise ValueError(f"prompt(s) {empty[:5]} tokenize to nothing")
    return encoded


def _pad_id(tokenizer: Any) -> int:
    for attr in ("pad_token_id", "eos_token_id", "unk_token_id"):
        value = getattr(tokenizer, attr, None)
        if isinstance(value, int):
            return value
    return 0


def _padded(rows: Sequence[Sequence[int]], pad: int, left: bool) -> tuple[torch.Tensor, torch.Tensor]:
    width = max(len(r) for r in rows)
    ids = torch.full((len(rows), width), pad, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, row in enumerate(rows):
        span = slice(width - len(row), width) if left else slice(0, len(row))
        ids[i, span] = torch.tensor(row, dtype=torch.long)
        mask[i, span] = 1
    return ids, mask


def _accepts(model: nn.Module, name: str) -> bool:
    try:
        return name in inspect.signature(model.forward).parameters
    except (TypeError, ValueError):
        return False


def _batches(lengths: Sequence[int], batch_size: int) -> list[list[int]]:
    """Example indices grouped into batches of similar prompt length (less padding)."""
    order = sorted(range(len(lengths)), key=lambda i: lengths[i])
    return [order[s:s + batch_size] for s in range(0, len(order), batch_size)]


def _label_scores(model: nn.Module, encoded: list[list[int]], label_ids: list[list[int]], batch_size: int,
                  pad: int, bar: Any) -> torch.Tensor:
    device = model.get_input_embeddings().weight.device
    keep_last = _accepts(model, "logits_to_keep")
    scores = torch.empty(len(encoded), len(label_ids), dtype=torch.float32)
    for batch in _batches([len(e) for e in encoded], batch_size):
        # Right padding: under causal attention the trailing pads cannot affect the real positions.
        ids, mask = _padded([encoded[i] for i in batch], pad, left=False)
        last = mask.sum(dim=1) - 1
        kwargs: dict[str, Any] = {"input_ids": ids.to(device), "attention_mask": mask.to(device),
                                  "use_cache": False}
        if keep_last:  # the LM head only runs at the positions read below
            positions = torch.unique(last)
            kwargs["logits_to_keep"] = positions.to(device)
            column = torch.searchsorted(positions, last)
        else:
            column = last
        logits = model(**kwargs).logits
        next_token = logits[torch.arange(len(batch), device=logits.device), column.to(logits.device)]
        logprobs = torch.log_softmax(next_token.float(), dim=-1).cpu()
        for label, token_ids in enumerate(label_ids):
            scores[batch, label] = torch.logsumexp(logprobs[:, token_ids], dim=-1)
        if bar is not None:
            bar.update(len(batch))
    return scores


def _generate_answers(model: nn.Module, tokenizer: Any, encoded: list[list[int]], batch_size: int,
                      max_new_tokens: int, pad: int, bar: Any) -> list[str]:
    from transformers import GenerationConfig

    device = model.get_input_embeddings().weight.device
    eos = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
    if eos is None:
        eos = getattr(tokenizer, "eos_token_id", None)
    config = GenerationConfig(max_new_tokens=max_new_tokens, do_sample=False, pad_token_id=pad,
                              eos_token_id=eos)
    answers: list[str] = [""] * len(encoded)
    for batch in _batches([len(e) for e in encoded], batch_size):
        # Left padding: generation appends after the last column, which must be real for every row.
        ids, mask = _padded([encoded[i] for i in batch], pad, left=True)
        out = model.generate(input_ids=ids.to(device), attention_mask=mask.to(device),
                             generation_config=config)
        for row, i in enumerate(batch):
            answers[i] = tokenizer.decode(out[row, ids.shape[1]:], skip_special_tokens=True)
        if bar is not None:
            bar.update(len(batch))
    return answers


def _groups(dataset: TextDataset, group_by: str | None, predictions: Sequence[int]
            ) -> dict[str, GroupAccuracy]:
    if group_by is None or group_by not in dataset.meta:
        return {}
    tallies: dict[str, list[int]] = {}
    for value, pred, gold in zip(dataset.meta[group_by], predictions, dataset.labels):
        tally = tallies.setdefault(str(value), [0, 0, 0])
        tally[0] += int(pred == gold)
        tally[1] += 1
        tally[2] += int(pred == UNPARSEABLE)
    return {key: GroupAccuracy(*tallies[key]) for key in sorted(tallies)}


def evaluate_zero_shot(
    model: nn.Module,
    tokenizer: Any,
    dataset: TextDataset,
    template: str | PromptTemplate,
    *,
    mode: str = "logits",
    batch_size: int = 8,
    max_new_tokens: int = 8,
    group_by: str | None = "method",
    chat: bool | None = None,
    progress: bool = True,
) -> ZeroShotResult:
    """Zero-shot accuracy of a causal LM on a clean or adversarial classification set.

    Args:
        model: a Hugging Face causal LM (e.g. from :func:`robustprune.models.load_smollm2`), used in
            eval mode without gradients; its training flag is restored afterwards.
        tokenizer: its tokenizer (not modified).
        dataset: a :class:`TextDataset` (GLUE TSV, AdvGLUE JSON, ...), single sentences or pairs.
        template: a task name for :func:`get_template` or a :class:`PromptTemplate`.
        mode: ``"logits"`` (label-word next-token scoring) or ``"generate"`` (greedy answer, parsed).
        batch_size: prompts per forward pass (batched by similar length).
        max_new_tokens: answer length in ``"generate"`` mode.
        group_by: metadata column to report accuracy by (default ``"method"``, the attack of each
            adversarial example); ignored when the dataset has no such column.
        chat: use the tokenizer's chat template (default: when it has one).
        progress: show a tqdm progress bar over examples.

    Raises:
        TypeError: the model has no causal-LM head, or ``dataset`` is not a TextDataset.
        ValueError: the template and the data disagree (pairs vs single sentences, number of labels),
            label words the tokenizer cannot tell apart by their first token, an unknown task or mode.
    """
    template = get_template(template) if isinstance(template, str) else template
    if not isinstance(template, PromptTemplate):
        raise TypeError(f"template must be a task name or a PromptTemplate, got {type(template).__name__}")
    _check_inputs(model, dataset, template, mode, batch_size, max_new_tokens)
    label_ids = label_token_ids(tokenizer, template.label_words) if mode == "logits" else None
    chat_mode = _use_chat(tokenizer, chat)
    pairs: Sequence[str | None] = dataset.text_pairs or [None] * len(dataset)
    prompts = [template.prompt(tokenizer, t, p, chat=chat_mode) for t, p in zip(dataset.texts, pairs)]
    encoded = _tokenize_prompts(tokenizer, prompts, chat_mode)
    pad = _pad_id(tokenizer)

    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=len(dataset), desc=f"zero-shot {dataset.name or 'dataset'} ({mode})", unit="example")
    was_training = model.training
    model.eval()
    scores, answers = None, None
    try:
        with torch.inference_mode():
            if mode == "logits":
                scores = _label_scores(model, encoded, label_ids, batch_size, pad, bar)
                predictions = scores.argmax(dim=1).tolist()
            else:
                answers = _generate_answers(model, tokenizer, encoded, batch_size, max_new_tokens, pad, bar)
                predictions = [parse_answer(a, template.label_words) for a in answers]
    finally:
        model.train(was_training)
        if bar is not None:
            bar.close()
    correct = sum(int(p == g) for p, g in zip(predictions, dataset.labels))
    counts = [0] * template.num_labels
    for p in predictions:
        if p != UNPARSEABLE:
            counts[p] += 1
    return ZeroShotResult(accuracy=correct / len(dataset), correct=correct, total=len(dataset),
                          unparseable=predictions.count(UNPARSEABLE), predictions=predictions,
                          labels=list(dataset.labels), prediction_counts=counts,
                          groups=_groups(dataset, group_by, predictions), mode=mode, scores=scores,
                          answers=answers)


__all__ = ["GLUE_TEMPLATES", "GroupAccuracy", "PromptTemplate", "ZeroShotResult", "evaluate_zero_shot",
           "get_template", "label_token_ids", "parse_answer"]
