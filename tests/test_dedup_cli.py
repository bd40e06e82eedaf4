"""`annbin dedup`: texts, codes and float embeddings in; pairs, groups and rows to keep out.

Through click's CliRunner, and once as a real subprocess; every bad input is one line on stderr
and exit code 2.
"""

import json
import subprocess
import sys

import numpy as np
import pytest
from click.testing import CliRunner

import annbin
from annbin.bench.cli import main

LONG = ("Multi-index hashing splits every binary code into a few substrings and keeps one hash table per substring; two codes "
        "that differ in fewer bits than there are tables must agree exactly on at least one substring, so probing each table "
        "with the query substring and its near neighbours finds every code within the radius, after which a full Hamming "
        "distance check on the candidates removes the false matches and leaves the exact answer that a linear scan over all "
        "codes would have given")
LINES = [
    LONG,                                                                               # 0
    "Perl regular expressions match text against patterns of characters and classes",  # 1
    LONG,                                                                               # 2: exact duplicate of 0
    LONG.replace("linear scan", "plain scan"),                                          # 3: one word changed in 83
    "The cat sat on the mat and watched the birds in the garden",                       # 4
    "Connection pooling keeps database sessions open between requests to save time",   # 5
]
# Written by hand from the SimHash codes (64 bits, shingle 3; test_simhash pins the hash): rows 0
# and 2 are identical, row 3 is 7 bits from both, every other pair is 28 bits or more apart.
PAIRS_R10 = [(0, 2, 0), (0, 3, 7), (2, 3, 7)]


@pytest.fixture
def docs(tmp_path):
    path = tmp_path / "docs.txt"
    path.write_text("\n".join(LINES) + "\n", encoding="utf-8")
    return path


def run(*args):
    return CliRunner().invoke(main, ["dedup", *map(str, args), "--no-progress"])


def reference_pairs(codes, radius):
    """Plain popcount over all pairs: the oracle."""
    d = np.bitwise_count(codes[:, None, :] ^ codes[None, :, :]).sum(axis=2)
    i, j = np.nonzero(np.triu(d < radius, k=1))
    return sorted(zip(d[i, j].tolist(), i.tolist(), j.tolist()))


def test_text_round_trip(docs, tmp_path):
    out, groups, keep = tmp_path / "pairs.jsonl", tmp_path / "groups.npy", tmp_path / "keep.npy"
    result = run(docs, "--radius", 10, "--out", out, "--groups", groups, "--keep", keep)
    assert result.exit_code == 0, result.output
    assert [(r["i"], r["j"], r["distance"]) for r in map(json.loads, out.read_text().splitlines())] == PAIRS_R10
    assert np.load(groups).tolist() == [0, 1, 0, 0, 4, 5]
    assert np.load(keep).tolist() == [0, 1, 4, 5]
    summary = result.stdout.splitlines()[0]
    for part in ("6 items (text, 64 bits)", "3 pairs at distance < 10", "1 groups of duplicates (3 items)", "2 items to drop"):
        assert part in summary, summary


def test_npy_pairs_keep_last_and_a_smaller_radius(docs, tmp_path):
    out, keep = tmp_path / "pairs.npy", tmp_path / "keep.npy"
    result = run(docs, "-r", 10, "-o", out, "--keep", keep, "--keep-rule", "last")
    assert result.exit_code == 0, result.output
    table = np.load(out)
    assert table.dtype == np.int64 and table.shape == (3, 3)
    assert [tuple(row) for row in table.tolist()] == PAIRS_R10
    assert np.load(keep).tolist() == [1, 3, 4, 5]
    result = run(docs, "--radius", 1, "--out", out)  # only the exact duplicate
    assert result.exit_code == 0, result.output
    assert np.load(out).tolist() == [[0, 2, 0]]


def test_text_options_and_line_ends(tmp_path):
    path = tmp_path / "crlf.txt"
    path.write_bytes(("\r\n".join(LINES) + "\r\n").encode())  # \r\n ends give the same rows and codes
    out = tmp_path / "p.npy"
    result = run(path, "-r", 20, "--bits", 128, "--shingle", 2, "-o", out)
    assert result.exit_code == 0, result.output
    codes = annbin.simhash(LINES, bits=128, shingle=2)
    assert [(i, j, d) for i, j, d in np.load(out).tolist()] == [(i, j, d) for d, i, j in reference_pairs(codes, 20)]
    assert "6 items (text, 128 bits)" in result.stdout


def test_codes_npy(tmp_path, rng):
    centres = rng.integers(0, 256, size=(20, 8), dtype=np.uint8)
    codes = centres[rng.integers(0, 20, size=300)]
    flips = np.zeros((300, 64), np.uint8)
    flips[np.arange(300), rng.integers(0, 64, size=300)] = rng.integers(0, 2, size=300)  # 0 or 1 bit from its centre
    codes = codes ^ np.packbits(flips, axis=1)
    path, out, groups = tmp_path / "codes.npy", tmp_path / "pairs.npy", tmp_path / "groups.npy"
    np.save(path, codes)
    result = run(path, "--radius", 3, "--out", out, "--groups", groups, "--threads", 1)
    assert result.exit_code == 0, result.output
    want = reference_pairs(codes, 3)
    assert [(d, i, j) for i, j, d in np.load(out).tolist()] == want
    labels = np.load(groups)
    assert all(labels[i] == labels[j] for _, i, j in want)
    assert (labels <= np.arange(300)).all()
    assert f"300 items (codes, 64 bits), {len(want):,} pairs" in result.stdout


@pytest.mark.parametrize("dtype", [np.float16, np.float32, np.float64])
def test_float_npy_binarized_as_the_bench(tmp_path, rng, dtype):
    centres = rng.standard_normal((10, 32))
    x = (centres[rng.integers(0, 10, size=200)] + 0.05 * rng.standard_normal((200, 32))).astype(dtype)
    path, out = tmp_path / "floats.npy", tmp_path / "pairs.npy"
    np.save(path, x)
    result = run(path, "-r", 4, "-o", out)
    assert result.exit_code == 0, result.output
    got = [(d, i, j) for i, j, d in np.load(out).tolist()]
    assert got == reference_pairs(annbin.binarize(x), 4) and got
    assert "200 items (floats, 32 bits)" in result.stdout
    x32 = x.astype(np.float32)
    result = run(path, "-r", 4, "-o", out, "--thresholds", "median")
    assert result.exit_code == 0, result.output
    assert [(d, i, j) for i, j, d in np.load(out).tolist()] == reference_pairs(annbin.binarize(x32, np.median(x32, axis=0)), 4)
    result = run(path, "-r", 4, "-o", out, "--project-bits", 64)  # random hyperplanes, as `annbin bench --project-bits 64`
    assert result.exit_code == 0, result.output
    projected = x32 @ np.random.default_rng(0).standard_normal((32, 64)).astype(np.float32)
    assert [(d, i, j) for i, j, d in np.load(out).tolist()] == reference_pairs(annbin.binarize(projected), 4)
    assert "200 items (floats, 64 bits)" in result.stdout


def _bad_inputs(tmp_path, docs):
    garbage = tmp_path / "garbage.npy"
    garbage.write_bytes(b"not an array at all")
    np.save(tmp_path / "ints.npy", np.zeros((4, 8), np.int64))
    np.save(tmp_path / "int8.npy", np.zeros((4, 8), np.int8))
    np.save(tmp_path / "flat.npy", np.zeros(8, np.uint8))
    np.save(tmp_path / "cube.npy", np.zeros((2, 2, 2), np.float32))
    np.save(tmp_path / "objects.npy", np.array([{"a": 1}], dtype=object), allow_pickle=True)
    np.save(tmp_path / "codes.npy", np.zeros((4, 8), np.uint8))
    np.save(tmp_path / "nan.npy", np.full((4, 8), np.nan, np.float32))
    np.savez(tmp_path / "archive.npz", x=np.zeros((4, 8), np.uint8))
    (tmp_path / "archive.npz").rename(tmp_path / "archive.npy")
    (tmp_path / "latin1.txt").write_bytes("caf\xe9\n".encode("latin-1"))
    return {
        "missing file": ([tmp_path / "nope.txt", "-r", 3], "does not exist"),
        "unreadable npy": ([garbage, "-r", 3], "not a readable .npy"),
        "npz under a npy name": ([tmp_path / "archive.npy", "-r", 3], "not a .npy array"),
        "pickled objects": ([tmp_path / "objects.npy", "-r", 3], "not a readable .npy"),
        "int64 array": ([tmp_path / "ints.npy", "-r", 3], "dtype int64"),
        "int8 array": ([tmp_path / "int8.npy", "-r", 3], "dtype int8"),
        "1-D array": ([tmp_path / "flat.npy", "-r", 3], "2-D"),
        "3-D array": ([tmp_path / "cube.npy", "-r", 3], "2-D"),
        "NaN floats": ([tmp_path / "nan.npy", "-r", 3], "NaN"),
        "not UTF-8": ([tmp_path / "latin1.txt", "-r", 3], "UTF-8"),
        "radius 0": ([docs, "-r", 0], "radius must be >= 1"),
        "negative radius": ([docs, "-r", -2], "radius must be >= 1"),
        "bad --out suffix": ([docs, "-r", 3, "--out", tmp_path / "pairs.csv"], "--out must name a .npy or .jsonl"),
        "bad --groups suffix": ([docs, "-r", 3, "--groups", tmp_path / "g.txt"], "--groups must name a .npy"),
        "bad --keep suffix": ([docs, "-r", 3, "--keep", tmp_path / "k.json"], "--keep must name a .npy"),
        "--out into a missing folder": ([docs, "-r", 3, "--out", tmp_path / "no" / "p.npy"], "no folder"),
        "max pairs exceeded": ([docs, "-r", 10, "--max-pairs", 1], "max_pairs"),
        "--thresholds on text": ([docs, "-r", 3, "--thresholds", "median"], "apply to float embeddings"),
        "--project-bits on text": ([docs, "-r", 3, "--project-bits", 64], "apply to float embeddings"),
        "--project-bits on codes": ([tmp_path / "codes.npy", "-r", 3, "--project-bits", 64], "codes already"),
        "--bits on codes": ([tmp_path / "codes.npy", "-r", 3, "--bits", 64], "set a text file's SimHash"),
        "--shingle on codes": ([tmp_path / "codes.npy", "-r", 3, "--shingle", 2], "set a text file's SimHash"),
        "--project-bits 12": ([tmp_path / "codes.npy", "-r", 3, "--project-bits", 12], "multiple of 8"),
        "text --bits 32": ([docs, "-r", 3, "--bits", 32], "bits must be one of"),
        "text --shingle 0": ([docs, "-r", 3, "--shingle", 0], "shingle must be >= 1"),
        "threads 0": ([docs, "-r", 3, "--threads", 0], "--threads must be >= 1"),
    }


BAD = ["missing file", "unreadable npy", "npz under a npy name", "pickled objects", "int64 array", "int8 array", "1-D array", "3-D array",
       "NaN floats", "not UTF-8", "radius 0", "negative radius", "bad --out suffix", "bad --groups suffix", "bad --keep suffix",
       "--out into a missing folder", "max pairs exceeded", "--thresholds on text", "--project-bits on text", "--project-bits on codes", "--bits on codes", "--shingle on codes", "--project-bits 12", "text --bits 32",
       "text --shingle 0", "threads 0"]


@pytest.mark.parametrize("case", BAD)
def test_bad_input_is_one_line_and_exit_2(tmp_path, docs, case):
    args, message = _bad_inputs(tmp_path, docs)[case]
    result = run(*args)
    assert result.exit_code == 2, (result.output, result.exception)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("annbin: error: "), result.stderr
    assert message in lines[0], lines[0]
    assert not (tmp_path / "pairs.csv").exists()


def test_real_subprocess(docs, tmp_path):
    out = tmp_path / "pairs.jsonl"
    cmd = [sys.executable, "-m", "annbin.bench.cli", "dedup"]
    proc = subprocess.run([*cmd, str(docs), "--radius", "10", "--out", str(out)], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "3 pairs at distance < 10" in proc.stdout and proc.stderr == ""  # no progress bar when stderr is not a terminal
    assert [(r["i"], r["j"], r["distance"]) for r in map(json.loads, out.read_text().splitlines())] == PAIRS_R10
    bad = subprocess.run([*cmd, str(docs), "--radius", "0"], capture_output=True, text=True, timeout=120)
    assert bad.returncode == 2 and bad.stderr.count("\n") == 1 and bad.stderr.startswith("annbin: error: ")
