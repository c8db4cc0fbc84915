"""Device names resolved in one place, and the precision reaching training and evaluation as autocast."""

from __future__ import annotations

import pytest
import torch
from transformers import AutoModelForSequenceClassification

from robustprune.data.datasets import load_glue_tsv
from robustprune.devices import (
    DeviceError,
    autocast,
    check_device_name,
    device_problem,
    grad_scaler,
    resolve_device,
    runtime_info,
    use_device,
)
from robustprune.eval.classifier import TextClassifier
from robustprune.train.adversarial import FreeLB
from robustprune.train.finetune import finetune_classifier
from robustprune.train.schedule import TrainingSchedule

no_gpu = pytest.mark.skipif(torch.cuda.device_count() > 0, reason="this machine has a GPU")


@pytest.mark.parametrize("name", ["gpu", "cuda:", "cuda:x", "CPU", "", None, 0, "cuda:0 "])
def test_bad_device_names_are_one_line_errors(name):
    with pytest.raises(DeviceError, match=r"^expected 'auto', 'cpu', 'cuda' or 'cuda:N', got "):
        check_device_name(name)


@no_gpu
def test_auto_is_the_cpu_without_a_gpu_and_cuda_is_refused():
    assert resolve_device("auto") == torch.device("cpu") == resolve_device("cpu") == use_device("auto")
    for name in ("cuda", "cuda:0", "cuda:3"):
        assert "needs a CUDA GPU, but this process sees none" in device_problem(name)
        for resolve in (resolve_device, use_device):
            with pytest.raises(DeviceError, match="needs a CUDA GPU"):
                resolve(name)
    assert not torch.cuda.is_initialized()  # asking did not initialise CUDA


def test_autocast_runs_matmuls_at_the_precision():
    layer, x = torch.nn.Linear(8, 8), torch.randn(2, 8)
    for precision, dtype in (("fp32", torch.float32), ("bf16", torch.bfloat16), ("fp16", torch.float16)):
        with autocast("cpu", precision):
            assert layer(x).dtype == dtype, precision
    with pytest.raises(DeviceError, match=r"expected one of \['fp32', 'bf16', 'fp16'\], got 'fp8'"), \
            autocast("cpu", "fp8"):
        pass
    assert grad_scaler("cpu", "fp16") is not None and grad_scaler("cpu", "bf16") is None


def test_runtime_info_states_device_precision_and_versions():
    info = runtime_info("cpu", "bf16")
    assert info["device"] == "cpu" and info["precision"] == "bf16" and info["torch"] == torch.__version__
    assert info["cuda"] == torch.version.cuda and set(info) >= {"device_name", "triton", "cuda_visible_devices"}


def test_schedule_precision_is_checked_and_fingerprinted_only_off_fp32():
    assert "precision" not in TrainingSchedule().as_dict()  # checkpoints from before the field still resume
    assert TrainingSchedule(precision="bf16").as_dict()["precision"] == "bf16"
    with pytest.raises(ValueError, match=r"TrainingSchedule.precision must be one of"):
        TrainingSchedule(precision="half")


def _linear_output_dtypes(model):
    seen = []
    hooks = [m.register_forward_hook(lambda _m, _i, out: seen.append(out.dtype))
             for m in model.modules() if isinstance(m, torch.nn.Linear)]
    return seen, hooks


def tiny_bert():
    """A 2-layer BERT (hidden 32) with random weights and MiniLM's vocabulary."""
    from transformers import BertConfig, BertForSequenceClassification

    torch.manual_seed(0)
    return BertForSequenceClassification(BertConfig(vocab_size=30522, hidden_size=32, num_hidden_layers=2,
                                                    num_attention_heads=2, intermediate_size=64, num_labels=2))


@pytest.fixture(scope="module")
def tiny_train():
    from tests.conftest import SST2_TRAIN

    return load_glue_tsv(SST2_TRAIN).subset(range(8))


@pytest.mark.parametrize("precision, dtype", [("bf16", torch.bfloat16), ("fp16", torch.float16)])
def test_training_computes_at_the_schedule_precision(minilm_tokenizer, tiny_train, precision, dtype):
    model = tiny_bert()
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    seen, hooks = _linear_output_dtypes(model)
    schedule = TrainingSchedule(batch_size=8, lr=1e-3, max_length=16, precision=precision)
    history = finetune_classifier(model, minilm_tokenizer, tiny_train, schedule, attack=FreeLB(steps=2),
                                  progress=False)
    for hook in hooks:
        hook.remove()
    assert seen and set(seen) == {dtype}  # every Linear of every forward (FreeLB's ascent too) at the precision
    assert history.steps == 1 and all(torch.isfinite(torch.tensor(history.losses)))
    assert all(p.dtype == torch.float32 for p in model.parameters())  # master weights stay fp32
    moved = [n for n, p in model.named_parameters() if not torch.equal(p.detach(), before[n])]
    assert len(moved) > len(before) // 2  # the (scaled, for fp16) gradients reached the optimizer


def test_the_classifier_evaluates_at_its_precision(minilm_path, minilm_tokenizer):
    torch.manual_seed(0)
    model = AutoModelForSequenceClassification.from_pretrained(minilm_path, num_labels=2).eval()
    texts = ["a gripping, funny film", "dull and far too long", "fine"]
    exact = TextClassifier(model, minilm_tokenizer).predict_logits(texts)
    seen, hooks = _linear_output_dtypes(model)
    half = TextClassifier(model, minilm_tokenizer, precision="bf16").predict_logits(texts)
    for hook in hooks:
        hook.remove()
    assert set(seen) == {torch.bfloat16} and half.dtype == torch.float32
    assert torch.allclose(half, exact, atol=0.05) and not torch.equal(half, exact)
    with pytest.raises(DeviceError, match="expected one of"):
        TextClassifier(model, minilm_tokenizer, precision="float16")
