"""The datasets that ship inside the package, so experiments run without a download.

- ``sentiment`` (``data.data_dir: embedded`` in a config): 360 train / 200 dev sentences written for
  robustprune, GLUE SST-2 format (``sentiment/PROVENANCE.md``).
- ``sst2`` (``data.data_dir: sst2-sample``): real GLUE SST-2, the first 3,000 training rows and the full
  872-row dev split (``sst2/PROVENANCE.md``).
"""

from __future__ import annotations

from pathlib import Path

_HERE = Path(__file__).resolve().parent
SENTIMENT_DIR = _HERE / "sentiment"
SST2_SAMPLE_DIR = _HERE / "sst2"

# config value of ``data.data_dir`` -> (folder, the only task it holds)
BUNDLED_DATA = {"embedded": (SENTIMENT_DIR, "sst2"), "sst2-sample": (SST2_SAMPLE_DIR, "sst2")}


def bundled_data_dir(name: str) -> Path:
    """The folder of a bundled dataset named as in a config (``"embedded"``, ``"sst2-sample"``), or
    ``Path(name)`` for anything else (a folder of the user's)."""
    return BUNDLED_DATA[name][0] if name in BUNDLED_DATA else Path(name)


__all__ = ["BUNDLED_DATA", "SENTIMENT_DIR", "SST2_SAMPLE_DIR", "bundled_data_dir"]
