"""Experiments: sweep configs, the resumable runner, reports and the embedded demo."""

from robustprune.experiments.config import ConfigError, ExperimentConfig, load_config, parse_config
from robustprune.experiments.report import build_report
from robustprune.experiments.runner import run_experiment

__all__ = ["ConfigError", "ExperimentConfig", "build_report", "load_config", "parse_config", "run_experiment"]
