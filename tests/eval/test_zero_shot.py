"""Zero-shot prompted classification with the real SmolLM2 on real SST-2 dev sentences."""

import pytest
import torch
from transformers import AutoModel

from robustprune.data.datasets import TextDataset
from robustprune.eval.zero_shot import (
    GLUE_TEMPLATES,
    PromptTemplate,
    evaluate_zero_shot,
    get_template,
    label_token_ids,
    parse_answer,
)
from tests import llm_fixtures

# Shared fixtures (SmolLM2 loads once per process: tests/llm_fixtures.py).
smollm2 = llm_fixtures.smollm2

PAIRS = TextDataset(
    texts=["A man is playing a guitar on a stage.", "The shop closes at six every evening.",
           "Two children are swimming in the lake.", "The train to the city was cancelled."],
    text_pairs=["A man is playing music.", "The shop is open all night.",
                "Children are in the water.", "The train left on time."],
    labels=[0, 1, 0, 1], name="hand-written RTE-style pairs")


@pytest.mark.slow
def test_sst2_dev_accuracy_is_above_chance(smollm2, sst2_dev):
    model, tokenizer = smollm2
    data = sst2_dev.subset(range(40))
    result = evaluate_zero_shot(model, tokenizer, data, "sst2", batch_size=20, progress=False)
    assert result.total == 40 and result.unparseable == 0 and result.mode == "logits"
    assert result.correct == sum(p == g for p, g in zip(result.predictions, data.labels))
    # 18 negative / 22 positive here; 26 of 40 right has probability < 4 % for a coin.
    assert result.accuracy >= 0.65, result.accuracy
    assert min(result.prediction_counts) >= 5, result.prediction_counts  # not collapsed to one class
    assert result.scores.shape == (40, 2)
    assert result.predictions == result.scores.argmax(dim=1).tolist()


@pytest.mark.slow
def test_label_scores_sum_the_spellings_of_each_label_word(smollm2, sst2_dev):
    model, tokenizer = smollm2
    template = get_template("sst2")
    ids = label_token_ids(tokenizer, template.label_words)
    for word, firsts in zip(template.label_words, ids):
        for spelling in (word, " " + word, word.capitalize(), " " + word.capitalize()):
            assert tokenizer(spelling, add_special_tokens=False)["input_ids"][0] in firsts
    data = sst2_dev.subset([3, 7])
    result = evaluate_zero_shot(model, tokenizer, data, template, batch_size=2, progress=False)
    for row in range(2):  # independent recomputation, one unpadded prompt at a time
        prompt = template.prompt(tokenizer, data.texts[row])
        encoded = tokenizer(prompt, add_special_tokens=False, return_tensors="pt")
        with torch.no_grad():
            logprobs = model(**encoded).logits[0, -1].log_softmax(-1)
        expected = torch.stack([torch.logsumexp(logprobs[firsts], 0) for firsts in ids])
        torch.testing.assert_close(result.scores[row], expected, rtol=1e-4, atol=1e-4)


@pytest.mark.slow
def test_generate_and_parse_counts_unparseable_answers(smollm2, sst2_dev):
    model, tokenizer = smollm2
    data = sst2_dev.subset(range(16))
    result = evaluate_zero_shot(model, tokenizer, data, "sst2", mode="generate", max_new_tokens=3,
                                batch_size=8, progress=False)
    assert len(result.answers) == 16 and result.scores is None
    assert result.predictions == [parse_answer(a, ("negative", "positive")) for a in result.answers]
    assert result.unparseable == result.predictions.count(-1)
    assert sum(result.prediction_counts) + result.unparseable == 16
    assert result.accuracy > 0.5, result.answers


@pytest.mark.slow
def test_accuracy_per_attack_method(smollm2, sst2_dev):
    model, tokenizer = smollm2
    base = sst2_dev.subset(range(40, 52))
    methods = ["textfooler", "pwws", "textbugger"] * 4
    adversarial = TextDataset(texts=base.texts, labels=base.labels, name="adv-sst2", meta={"method": methods})
    result = evaluate_zero_shot(model, tokenizer, adversarial, "sst2", batch_size=12, progress=False)
    assert sorted(result.groups) == ["pwws", "textbugger", "textfooler"]
    for method, group in result.groups.items():
        rows = [i for i, m in enumerate(methods) if m == method]
        assert group.total == 4
        assert group.correct == sum(result.predictions[i] == base.labels[i] for i in rows)
    assert sum(g.correct for g in result.groups.values()) == result.correct
    ungrouped = evaluate_zero_shot(model, tokenizer, adversarial, "sst2", group_by=None, progress=False)
    assert ungrouped.groups == {}


@pytest.mark.slow
def test_sentence_pair_task(smollm2):
    model, tokenizer = smollm2
    template = get_template("rte")
    prompt = template.prompt(tokenizer, PAIRS.texts[0], PAIRS.text_pairs[0])
    assert PAIRS.texts[0] in prompt and PAIRS.text_pairs[0] in prompt and prompt.endswith("Answer:")
    assert prompt.startswith("<|im_start|>")  # SmolLM2's chat template
    plain = template.prompt(tokenizer, PAIRS.texts[0], PAIRS.text_pairs[0], chat=False)
    assert not plain.startswith("<|im_start|>") and plain.endswith("\nAnswer:")
    result = evaluate_zero_shot(model, tokenizer, PAIRS, "rte", progress=False)
    assert result.scores.shape == (4, 2) and set(result.predictions) <= {0, 1}
    # AdvGLUE's MNLI-mismatched name maps to the 3-way MNLI template.
    assert get_template("mnli-mm").label_words == ("yes", "maybe", "no")


@pytest.mark.slow
def test_calibration_formatter_appends_the_gold_answer(smollm2):
    _, tokenizer = smollm2
    template = get_template("sst2")
    text = template.formatter(tokenizer)("a gorgeous film", None, 1)
    assert text == template.prompt(tokenizer, "a gorgeous film") + " positive"
    assert template.formatter(tokenizer, with_answer=False)("a dull film", None, 0).endswith("review is")


def test_parse_answer():
    words = ("negative", "positive")
    assert parse_answer(" positive.", words) == 1
    assert parse_answer("Negative! Not positive at all", words) == 0  # the first label word named
    assert parse_answer("It is POSITIVE", words) == 1
    assert parse_answer("I cannot tell", words) == -1
    assert parse_answer("positively great", words) == -1  # whole words only
    assert parse_answer("maybe", ("yes", "maybe", "no")) == 1


def test_template_errors():
    with pytest.raises(ValueError, match=r"missing the field \{text\}"):
        PromptTemplate("Is this positive?", ("no", "yes"))
    with pytest.raises(ValueError, match=r"\['sentence'\] are not known"):
        PromptTemplate("Review: {sentence}", ("no", "yes"))
    with pytest.raises(ValueError, match="at least 2 classes"):
        PromptTemplate("Review: {text}", ("yes",))
    with pytest.raises(ValueError, match="must differ"):
        PromptTemplate("Review: {text}", ("Yes", "yes"))
    with pytest.raises(ValueError, match="no built-in prompt template; known tasks"):
        get_template("squad")
    with pytest.raises(ValueError, match="text_pair is missing"):
        get_template("rte").render("only one sentence")
    assert set(GLUE_TEMPLATES) >= {"sst2", "qqp", "mnli", "qnli", "rte"}  # the AdvGLUE tasks


@pytest.mark.slow
def test_data_the_template_cannot_express(smollm2, sst2_dev, minilm_path):
    model, tokenizer = smollm2
    single = sst2_dev.subset(range(4))
    with pytest.raises(ValueError, match=r"holds sentence pairs but the prompt template has no \{text_pair"):
        evaluate_zero_shot(model, tokenizer, PAIRS, "sst2", progress=False)
    with pytest.raises(ValueError, match=r"has a \{text_pair\} field but .* holds single sentences"):
        evaluate_zero_shot(model, tokenizer, single, "rte", progress=False)
    three = TextDataset(texts=single.texts, labels=[0, 1, 2, 0], num_labels=3, name="3-way")
    with pytest.raises(ValueError, match="3-way has 3 labels but the template's label_words .* express 2"):
        evaluate_zero_shot(model, tokenizer, three, "sst2", progress=False)
    clash = PromptTemplate("Review: {text}", ("entailment", "entailed"))
    with pytest.raises(ValueError, match="both start with token .* cannot express this label set"):
        evaluate_zero_shot(model, tokenizer, single, clash, progress=False)
    with pytest.raises(ValueError, match="mode must be one of"):
        evaluate_zero_shot(model, tokenizer, single, "sst2", mode="sample", progress=False)
    with pytest.raises(TypeError, match="BertModel, which has no causal-LM head"):
        evaluate_zero_shot(AutoModel.from_pretrained(minilm_path), tokenizer, single, "sst2", progress=False)
