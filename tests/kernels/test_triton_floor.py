"""The triton floor in pyproject.toml is the first release with every language feature the kernels use."""

from __future__ import annotations

import inspect
import re
from pathlib import Path

import triton
import triton.language as tl
from packaging.version import Version

REPO = Path(__file__).resolve().parents[2]
KERNELS = REPO / "src" / "robustprune" / "kernels"

# The newest language feature the kernels rely on, the release that introduced it, and how to see it.
NEWEST_FEATURE = ("tl.histogram(..., mask=)", Version("3.4.0"),
                  lambda: "mask" in inspect.signature(tl.histogram).parameters)


def floor() -> Version:
    text = (REPO / "pyproject.toml").read_text()
    found = re.search(r'"triton>=([0-9.]+)', text)
    assert found, "pyproject.toml declares no triton floor"
    return Version(found.group(1))


def test_installed_triton_meets_the_floor():
    assert Version(triton.__version__.split("+")[0]) >= floor()


def test_the_floor_is_the_release_of_the_newest_feature_used():
    name, release, present = NEWEST_FEATURE
    assert floor() == release, f"{name} arrived in triton {release}; pyproject.toml says >= {floor()}"
    assert present(), f"{name} is missing from the installed triton {triton.__version__}"
    # the feature is really used: drop the floor when no kernel needs it any more
    assert any("tl.histogram(" in path.read_text() and "mask=" in path.read_text()
               for path in KERNELS.glob("*.py"))
