"""The ``robustprune`` command's own options (its subcommands are tested with the experiments)."""

import subprocess
import sys
from importlib import metadata

import robustprune


def test_version_is_the_installed_distributions():
    assert robustprune.__version__ == metadata.version("robustprune")
    for module in ("robustprune.cli", "robustprune"):  # python -m robustprune is the same command
        done = subprocess.run([sys.executable, "-m", module, "--version"], capture_output=True, text=True,
                              check=True)
        assert done.stdout.strip() == f"robustprune {metadata.version('robustprune')}"


def test_no_progress_silences_transformers_bars_for_the_whole_run(monkeypatch, tmp_path, capsys):
    """``run --no-progress`` turns off transformers' own "Loading weights" bars while the sweep runs (a sweep
    loads a checkpoint per point, and the bars would flood a log), and puts them back afterwards."""
    from transformers.utils import logging as hf_logging

    from robustprune import cli
    from robustprune.experiments import runner

    seen = []

    def sweep(config, out, *, progress, **_):  # stands in for the sweep: records what the run would see
        seen.append((progress, hf_logging.is_progress_bar_enabled()))
        raise RuntimeError("stopped after the check")

    monkeypatch.setattr(runner, "run_experiment", sweep)
    hf_logging.enable_progress_bar()
    for flags, expected in ((["--no-progress"], (False, False)), ([], (True, True))):
        assert cli.main(["run", "es-robust", "--quick", "--out", str(tmp_path / "out"), *flags]) != 0
        assert seen.pop() == expected
        assert hf_logging.is_progress_bar_enabled()
    assert "stopped after the check" in capsys.readouterr().err
