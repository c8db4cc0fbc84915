"""Build ``src/robustprune/data/wordnet/wordnet-3.0.zip`` from a WordNet 3.0 dict directory.

Run once by a maintainer (the archive is committed; nothing runs this at install or run time)::

    python tools/make_wordnet_archive.py /usr/share/wordnet

The source is Debian's ``wordnet-base`` package (1:3.0-37), whose dict files the attacks were checked
against. The archive holds the files nltk's WordNet reader needs for what robustprune reads (index.*,
data.*, *.exc) plus a ``lexnames`` file written from WordNet's documented table, which Debian does not
ship. Members carry a fixed timestamp, so the same inputs give the same member bytes;
``SHA256SUMS`` beside the archive lists each member's SHA-256, which the tests check.
"""

from __future__ import annotations

import argparse
import hashlib
import zipfile
from pathlib import Path

from robustprune.eval.wordnet import ARCHIVE, ARCHIVE_MEMBERS, lexnames_text

FIXED_TIME = (2006, 12, 6, 0, 0, 0)  # WordNet 3.0's release year; any fixed value keeps builds repeatable


def build(source: Path, archive: Path = ARCHIVE) -> None:
    contents: dict[str, bytes] = {}
    for name in ARCHIVE_MEMBERS:
        contents[name] = lexnames_text().encode() if name == "lexnames" else (source / name).read_bytes()
    tmp = archive.with_suffix(".tmp")
    with zipfile.ZipFile(tmp, "w") as z:
        for name, data in contents.items():
            info = zipfile.ZipInfo(f"wordnet/{name}", date_time=FIXED_TIME)
            info.compress_type = zipfile.ZIP_DEFLATED
            info.external_attr = 0o644 << 16
            z.writestr(info, data, compresslevel=9)
    tmp.replace(archive)
    sums = "".join(f"{hashlib.sha256(data).hexdigest()}  wordnet/{name}\n" for name, data in contents.items())
    (archive.parent / "SHA256SUMS").write_text(sums)
    print(f"{archive}: {archive.stat().st_size / 1e6:.2f} MB, {len(contents)} members")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("source", type=Path, help="a WordNet 3.0 dict directory, e.g. /usr/share/wordnet")
    build(parser.parse_args().source)
