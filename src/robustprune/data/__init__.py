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
    save_advglue_json,
    task_spec,
)
from robustprune.data.texts import calibration_texts, read_text_lines, read_utf8, texts_from_hf_dataset

__all__ = [
    "GLUE_TASKS",
    "SST2_SAMPLE_DIR",
    "TaskSpec",
    "TextDataset",
    "calibration_texts",
    "load_advglue_json",
    "load_csv",
    "load_glue_task",
    "load_glue_tsv",
    "load_hf_dataset",
    "load_jsonl",
    "read_text_lines",
    "read_utf8",
    "save_advglue_json",
    "task_spec",
    "texts_from_hf_dataset",
]
