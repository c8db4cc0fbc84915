"""README.md's examples run as written from the repository root.

Every ```python block is executed, in order, in one namespace (the blocks build on each other), with
only its sizes shrunk so the whole README runs in a couple of minutes: each shrink names text that must
appear in the README, so an edited example fails here instead of silently running unshrunk. The YAML
config is validated as written, then run as a one-point sweep.
"""

from __future__ import annotations

import copy
import re
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
README = (REPO / "README.md").read_text(encoding="utf-8")

# (text in the README, what the test runs instead, how many times the text appears)
SHRINK = [
    ("num_samples=128, seq_len=128", "num_samples=8, seq_len=32", 2),
    ("for sparsity in (0.1, 0.3, 0.5, 0.7, 0.9):", "for sparsity in (0.5,):", 1),
    ('train = load_glue_tsv(SST2_SAMPLE_DIR / "train.tsv")',
     'train = load_glue_tsv(SST2_SAMPLE_DIR / "train.tsv").subset(range(64))', 1),
    ("max_examples=100", "max_examples=3", 1),
    ("dev.subset(range(40))", "dev.subset(range(4))", 1),
    ('load_glue_tsv(SST2_SAMPLE_DIR / "train.tsv"), 128, seed=0)',
     'load_glue_tsv(SST2_SAMPLE_DIR / "train.tsv"), 16, seed=0)', 1),
    ("texts[:200], seq_len=128)", "texts[:16], seq_len=32)", 1),
]


def python_blocks(text: str) -> list[str]:
    return re.findall(r"^```python\n(.*?)^```", text, flags=re.DOTALL | re.MULTILINE)


def bash_blocks(text: str, section: str) -> list[str]:
    """The ```bash blocks of one ``## section`` of the README."""
    body = text.split(f"\n## {section}\n", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"^```bash\n(.*?)^```", body, flags=re.DOTALL | re.MULTILINE)


# The command-line example of "Prune and evaluate your own model", shrunk like the Python ones.
COMMAND_SHRINK = [("--samples 128", "--samples 8", 1), ("--max-examples 200", "--max-examples 8", 1)]


def yaml_blocks(text: str) -> list[str]:
    return re.findall(r"^```yaml\n(.*?)^```", text, flags=re.DOTALL | re.MULTILINE)


@pytest.fixture
def in_checkout_copy(tmp_path, monkeypatch):
    """A working directory that looks like the repository root (its ``tests/`` linked in), so the
    README's relative paths resolve while whatever the examples write lands in ``tmp_path``."""
    (tmp_path / "tests").symlink_to(REPO / "tests", target_is_directory=True)
    monkeypatch.chdir(tmp_path)
    return tmp_path


def test_readme_paths_exist_in_the_repository():
    for path in sorted(set(re.findall(r"(?:tests|src/robustprune)/[\w./-]+", README))):
        assert (REPO / path.rstrip(".")).exists(), path
    assert "../shared" not in README and "DESIGN.md" not in README


@pytest.mark.slow
def test_every_python_block_runs(in_checkout_copy):
    blocks = python_blocks(README)
    assert len(blocks) == 8  # Use (4), Evaluate, Prune and evaluate your own model, Train, Decoder LLMs
    source = "\n# ---- next block ----\n".join(blocks)
    for old, new, count in SHRINK:
        assert source.count(old) == count, f"README example changed: {old!r} appears {source.count(old)} times"
    namespace: dict = {"__name__": "readme"}
    for index, block in enumerate(blocks):
        for old, new, _ in SHRINK:
            block = block.replace(old, new)
        exec(compile(block, f"README.md python block {index + 1}", "exec"), namespace)
    # What the blocks claim, checked on what they left behind.
    assert (in_checkout_copy / "minilm-2of4.safetensors").is_file()
    assert namespace["report"].summary()
    kept = sum(int(m.sum()) for m in namespace["ticket"].masks.values())
    total = sum(m.numel() for m in namespace["ticket"].masks.values())
    assert 1 - kept / total == pytest.approx(0.7, abs=1e-6)  # robust_ticket(..., sparsity=0.7)
    run_commands(in_checkout_copy)


def run_commands(directory):
    """The ```bash block of "Prune and evaluate your own model", shrunk, on the checkpoint the Python block
    before it saved; each line is one ``robustprune`` command, run in this process."""
    import json
    import shlex

    from robustprune.cli import main

    (block,) = bash_blocks(README, "Prune and evaluate your own model")
    for old, new, count in COMMAND_SHRINK:
        assert block.count(old) == count, f"README command changed: {old!r} appears {block.count(old)} times"
        block = block.replace(old, new)
    commands = [shlex.split(line) for line in block.replace("\\\n", " ").splitlines() if line.strip()]
    assert [c[:2] for c in commands] == [["robustprune", "prune"], ["robustprune", "eval"]]
    for command in commands:
        assert main([*command[1:], "--no-progress"]) == 0, command
    record = json.loads((directory / "minilm-sst2-wanda50" / "pruning.json").read_text())
    assert record["format"] == "sparse" and record["bytes_at_rest"]["ratio"] <= 0.57
    results = json.loads((directory / "eval-wanda50" / "results.json").read_text())
    assert results["comparison"]["tests"] == 3  # clean, the attack, the shift


@pytest.mark.slow
def test_yaml_config_validates_as_written_and_runs_shrunk(in_checkout_copy):
    from robustprune.experiments.config import load_config, parse_config
    from robustprune.experiments.runner import run_experiment, sweep_points

    (block,) = yaml_blocks(README)
    written = in_checkout_copy / "config.yaml"
    written.write_text(block, encoding="utf-8")
    config = load_config(written)
    assert len(sweep_points(config)) == 3 * 3 * (5 + 2) + 3  # methods x seeds x (sparsities + N:M) + dense

    raw = copy.deepcopy(yaml.safe_load(block))
    raw["data"].update(max_train_examples=32, max_eval_examples=16)
    raw["pruning"].update(methods=["magnitude", "wanda"], patterns=["unstructured"], sparsities=[0.5])
    raw["pruning"]["calibration"].update(samples=8)
    raw["evaluation"]["attacks"] = [dict(a, max_examples=2) for a in raw["evaluation"]["attacks"]]
    raw["evaluation"]["max_shift_examples"] = 8
    raw["seeds"] = [0]
    summary = run_experiment(parse_config(raw), in_checkout_copy / "results", progress=False)
    assert len(summary.computed) == 3  # dense, magnitude 0.5, wanda 0.5


@pytest.mark.parametrize("path", sorted((REPO / "docs" / "configs").glob("*.yaml")), ids=lambda p: p.name)
def test_documented_configs_validate_from_the_repository_root(path, monkeypatch):
    from robustprune.experiments.config import load_config
    from robustprune.experiments.runner import load_sweep_data

    monkeypatch.chdir(REPO)
    config = load_config(path)
    data = load_sweep_data(config)  # its data paths resolve inside the repository
    assert len(data.train) > 0 and len(data.evaluation) > 0
