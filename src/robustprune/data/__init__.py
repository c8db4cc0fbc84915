"""The data layer: labelled text datasets and their loaders, and plain text from files or hubs.

It imports nothing else from robustprune; training, evaluation, pruning and experiments all read their
data through it.
"""

from robustprune.data.bundled import SST2_SAMPLE_DIR
from robustprune.data.datasets import (
    GLUE_TASKS,
    TaskSpec,
    TextDataset,
    load_advglue_json,
    load_csv,
    load_glue_task,
    load_glue_tsv,
    load_hf_dataset,
    load_jsonl,
    task_spec,
)
from robustprune.data.texts import read_text_lines, read_utf8, texts_from_hf_dataset

__all__ = [
    "GLUE_TASKS",
    "SST2_SAMPLE_DIR",
    "TaskSpec",
    "TextDataset",
    "load_advglue_json",
    "load_csv",
    "load_glue_task",
    "load_glue_tsv",
    "load_hf_dataset",
    "load_jsonl",
    "read_text_lines",
    "read_utf8",
    "task_spec",
    "texts_from_hf_dataset",
]
