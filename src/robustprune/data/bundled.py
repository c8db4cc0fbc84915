"""The datasets that ship inside the package, so experiments run without a download.

- ``sentiment`` (``data.data_dir: embedded`` in a config): 360 train / 200 dev sentences written for
  robustprune, GLUE SST-2 format (``sentiment/PROVENANCE.md``).
- ``sst2`` (``data.data_dir: sst2-sample``): real GLUE SST-2, the first 3,000 training rows and the full
  872-row dev split (``sst2/PROVENANCE.md``).
- ``sst2_adv`` (``data.robust_set: sst2-adv-sample``): a small fixed adversarial set in AdvGLUE's JSON
  format, made by robustprune's own attacks against a MiniLM classifier fine-tuned on ``sst2-sample``, from
  SST-2 dev sentences (``sst2_adv/PROVENANCE.md``). A smoke-size stand-in for AdvGLUE / AdvGLUE++, not a
  replacement: its examples were not validated by people.
"""

from __future__ import annotations

from pathlib import Path

_HERE = Path(__file__).resolve().parent
SENTIMENT_DIR = _HERE / "sentiment"
SST2_SAMPLE_DIR = _HERE / "sst2"
SST2_ADV_FILE = _HERE / "sst2_adv" / "sst2_adv.json"

# config value of ``data.data_dir`` -> (folder, the only task it holds)
BUNDLED_DATA = {"embedded": (SENTIMENT_DIR, "sst2"), "sst2-sample": (SST2_SAMPLE_DIR, "sst2")}
# config value of ``data.robust_set`` -> (AdvGLUE-format JSON file, the only task it holds)
BUNDLED_ROBUST_SETS = {"sst2-adv-sample": (SST2_ADV_FILE, "sst2")}


def bundled_data_dir(name: str) -> Path:
    """The folder of a bundled dataset named as in a config (``"embedded"``, ``"sst2-sample"``), or
    ``Path(name)`` for anything else (a folder of the user's)."""
    return BUNDLED_DATA[name][0] if name in BUNDLED_DATA else Path(name)


def robust_set_file(name: str) -> Path:
    """The file of a bundled robust set named as in a config (``"sst2-adv-sample"``), or ``Path(name)`` for
    anything else (an AdvGLUE-format JSON file of the user's)."""
    return BUNDLED_ROBUST_SETS[name][0] if name in BUNDLED_ROBUST_SETS else Path(name)


__all__ = ["BUNDLED_DATA", "BUNDLED_ROBUST_SETS", "SENTIMENT_DIR", "SST2_ADV_FILE", "SST2_SAMPLE_DIR",
           "bundled_data_dir", "robust_set_file"]
