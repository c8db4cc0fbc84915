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
