"""The examples in README.md and docs/*.md run as written, and the README's commands are CI's.

A block is found by the line before its opening fence: ``<!-- test: NAME -->`` marks one that a
test runs, ``<!-- untested: REASON -->`` one that none does. The blocks a test names run as
written, in the order it names them, in one namespace and a scratch directory: a reader pasting a
page into one session. Every ``python`` block carries a marker, and every ``test:`` name is run by
a test (here, or in ``ELSEWHERE``), so a new example comes with its test.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parent.parent
PAGES = ["README.md", *sorted(p.relative_to(ROOT).as_posix() for p in (ROOT / "docs").glob("*.md"))]
#: (page, name) of every block marked ``test:``, and the test file that runs it
TESTED = {
    ("README.md", "bench-command"): "tests/test_readme.py",
    ("README.md", "test-command"): "tests/test_readme.py",
    ("README.md", "quickstart"): "tests/test_readme.py",
    ("docs/defaults.md", "trading-speed-for-recall"): "tests/test_readme.py",
    ("docs/guide.md", "binary-codes"): "tests/test_readme.py",
    ("docs/guide.md", "rescoring"): "tests/test_readme.py",
    ("docs/guide.md", "three-stages"): "tests/test_readme.py",
    ("docs/mih.md", "mih-near-duplicates"): "tests/test_readme.py",
    ("docs/mih.md", "mih-dedup"): "tests/test_readme.py",
    ("docs/faiss.md", "faiss-swap-before"): "tests/test_readme.py",
    ("docs/faiss.md", "faiss-swap-after"): "tests/test_readme.py",
    ("docs/faiss.md", "faiss-float"): "tests/test_readme.py",  # and tests/test_first_hour.py
    ("docs/faiss.md", "faiss-binary"): "tests/test_first_hour.py",
}
_FENCE = re.compile(r"```(\w*)\s*")
_MARKER = re.compile(r"<!-- (test|untested): (.+?) -->\s*")


@dataclass(frozen=True)
class Block:
    page: str
    line: int  # of the opening fence, 1-based
    lang: str
    code: str
    marker: str | None  # "test", "untested" or None
    name: str | None  # the test name, or the reason it is untested


def blocks(page: str) -> list[Block]:
    """Every fenced block of ``page``, with the marker on the line before it."""
    lines = (ROOT / page).read_text().splitlines(keepends=True)
    found, i = [], 0
    while i < len(lines):
        fence = _FENCE.fullmatch(lines[i])
        if fence is None:
            i += 1
            continue
        end = next(j for j in range(i + 1, len(lines)) if lines[j].startswith("```"))
        marker = _MARKER.fullmatch(lines[i - 1]) if i else None
        found.append(Block(page, i + 1, fence[1], "".join(lines[i + 1 : end]), marker and marker[1], marker and marker[2]))
        i = end + 1
    return found


def block(page: str, name: str) -> str:
    """The code of the one block of ``page`` marked ``<!-- test: name -->``."""
    named = [b for b in blocks(page) if b.marker == "test" and b.name == name]
    assert len(named) == 1, f"{page}: one block marked 'test: {name}' expected, found {len(named)}"
    return named[0].code


def run(page: str, *names: str, scope: dict[str, Any] | None = None) -> dict[str, Any]:
    """Run the named blocks of ``page`` as written, in order, in one namespace; return it."""
    scope = {} if scope is None else scope
    for name in names:
        exec(compile(block(page, name), f"{page}:{name}", "exec"), scope)
    return scope


def recall_at_10(found: np.ndarray, truth: np.ndarray) -> float:
    return float(np.mean([len(set(a) & set(b)) / 10 for a, b in zip(found.tolist(), truth.tolist())]))


def assert_did_its_own_work(index) -> None:
    """The last search of an MIH index made bucket lookups and sent no query to the flat scan."""
    stats = index.last_search_stats
    assert stats["lookups"] > 0 and stats["fallback_queries"] == 0, stats


def test_every_python_block_is_marked_and_every_marked_block_is_run():
    marked = set()
    for page in PAGES:
        for b in blocks(page):
            where = f"{b.page}:{b.line}"
            if b.lang == "python":
                assert b.marker is not None, f"{where}: a python block needs <!-- test: NAME --> or <!-- untested: REASON --> above it"
                compile(b.code, where, "exec")  # an untested block is still Python
            if b.marker == "test":
                assert (b.page, b.name) not in marked, f"{where}: 'test: {b.name}' used twice on the page"
                marked.add((b.page, b.name))
    assert marked == set(TESTED), f"marked but run by no test: {marked - set(TESTED)}; gone: {set(TESTED) - marked}"


@pytest.fixture(scope="module")
def quickstart_runs(tmp_path_factory):
    """The README's quickstart run twice in one process (a notebook cell run again), in a scratch
    directory: each run's namespace."""
    here = Path.cwd()
    os.chdir(tmp_path_factory.mktemp("quickstart"))
    try:
        yield [run("README.md", "quickstart") for _ in range(2)]
    finally:
        os.chdir(here)


def test_float_quickstart_runs_twice_with_its_figures(quickstart_runs):
    """The no-argument index on the shipped set, each time with the recall the README's table gives."""
    for scope in quickstart_runs:
        _, truth = scope["ds"].get_groundtruth(10)
        index, ids = scope["index"], scope["ids"]
        assert scope["scores"].dtype == np.float32 and ids.shape == (1000, 10)
        assert index.spec.startswith(("rq-hnsw", "rabitq-hnsw")) and index.metric == "cos"
        recall = recall_at_10(ids, truth)
        assert recall >= 0.95, recall  # README: recall@10 >= 0.95 at the default settings
        assert index.disk_bytes() == 20_000 * 384 * 4 and index.memory_bytes() < 20_000 * 384  # floats on disk
    # the graph is built on every core, so insertion order (and a few ids) may differ between runs
    first, second = (scope["ids"] for scope in quickstart_runs)
    assert np.mean(first == second) > 0.95


def test_defaults_knobs_continue_the_quickstart(quickstart_runs):
    """docs/defaults.md's "Trading speed for recall", in the quickstart's namespace: the per-call
    ef_search answers, and tune leaves a setting on the index that reaches its target."""
    scope = quickstart_runs[-1]
    run("docs/defaults.md", "trading-speed-for-recall", scope=scope)
    index, queries = scope["index"], scope["queries"]
    assert scope["ids"].shape == (1000, 10) and scope["scores"].dtype == np.float32
    _, truth = scope["ds"].get_groundtruth(10)
    _, ids = index.search(queries, 10)
    assert recall_at_10(ids, truth) >= 0.96  # tuned for 0.97 on half the queries, checked on the other half


def test_guide_binary_codes_match_the_scan(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    scope = run("docs/guide.md", "binary-codes")
    annbin, same = scope["annbin"], scope["same"]
    assert scope["D"].shape == (5, 10) and scope["D"].dtype == np.int32
    codes_q = annbin.binarize(scope["q"])
    assert np.array_equal(same.search(codes_q, 10)[0], scope["D"])  # the saved index, loaded
    # 384-bit codes: MIH answers by the scan; with the scan off it runs its own lookups, same (D, I)
    D, I = same.search(codes_q, 10, params={"fallback": "never"})
    assert_did_its_own_work(same)
    assert np.array_equal(D, scope["D"]) and np.array_equal(I, scope["I"])
    assert scope["empty"].ntotal == 0 and scope["empty"].d == 64


def test_guide_rescoring_reads_the_saved_floats(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    scope = run("docs/guide.md", "binary-codes", "rescoring")
    assert scope["scores"].shape == (5, 10) and (np.diff(scope["scores"], axis=1) <= 0).all()
    assert scope["rescored"].last_search_stats["candidates_per_query"] == 100.0  # 10 x k


def test_guide_three_stages_read_3k_floats(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    scope = run("docs/guide.md", "binary-codes", "three-stages")
    fast, three = scope["fast"], scope["three"]
    assert scope["ids"].shape == (5, 10) and (np.diff(scope["scores"], axis=1) <= 0).all()
    assert fast.last_search_stats == {"candidates_per_query": 30.0, "vectors_read_per_query": 30.0}
    assert three.last_search_stats == {"candidates_per_query": 200.0, "vectors_read_per_query": 30.0}
    exact = np.argsort(-(scope["qu"] @ scope["unit"].T), axis=1)[:, :10]
    for ids in (scope["ids"], scope["ids3"]):  # q = emb[:5] + 0.1: each query's own row comes first
        assert (ids[:, 0] == exact[:, 0]).all()


def test_mih_near_duplicates_are_exact_and_found_by_lookups(tmp_path, monkeypatch):
    import faiss

    monkeypatch.chdir(tmp_path)
    scope = run("docs/mih.md", "mih-near-duplicates")
    index, codes, queries = scope["index"], scope["codes"], scope["queries"]
    assert_did_its_own_work(index)  # the last search: kNN with fallback="never"
    flat = faiss.IndexBinaryFlat(64)
    flat.add(codes)
    assert np.array_equal(scope["D10"], flat.search(queries, 10)[0])
    lims, D, I = flat.range_search(queries, 7)
    assert np.array_equal(scope["lims"], lims)
    for q in range(len(queries)):
        got = slice(scope["lims"][q], scope["lims"][q + 1])
        assert sorted(zip(scope["D"][got].tolist(), scope["I"][got].tolist())) == sorted(zip(D[lims[q]:lims[q + 1]].tolist(), I[lims[q]:lims[q + 1]].tolist()))
    assert scope["lims"][-1] >= len(queries)  # every query finds at least itself


def test_mih_dedup_pairs_equal_a_brute_force_join(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    scope = run("docs/mih.md", "mih-near-duplicates", "mih-dedup")
    codes = scope["codes"][:3000]  # the reference below is quadratic: check the pairs among the first rows
    pairs, dist = scope["pairs"], scope["dist"]
    inside = (pairs < len(codes)).all(axis=1)  # pairs among the first rows
    ref = np.bitwise_count(codes[:, None, :] ^ codes[None, :, :]).sum(axis=2)
    i, j = np.nonzero(np.triu(ref < 4, k=1))
    assert sorted(zip(pairs[inside, 0].tolist(), pairs[inside, 1].tolist())) == sorted(zip(i.tolist(), j.tolist()))
    assert np.array_equal(np.lexsort((pairs[:, 1], pairs[:, 0], dist)), np.arange(len(dist)))
    groups, keep = scope["groups"], scope["keep"]
    assert (groups[pairs[:, 0]] == groups[pairs[:, 1]]).all() and len(keep) == len(np.unique(groups))
    assert scope["doc_pairs"].tolist() == [[0, 1]]


def test_faiss_swap_gives_the_same_distances(tmp_path, monkeypatch):
    """docs/faiss.md: faiss's IndexBinaryFlat code, then the same code on annbin's MIH index."""
    monkeypatch.chdir(tmp_path)
    scope = run("docs/faiss.md", "faiss-swap-before")
    faiss_index, faiss_D, faiss_Dr = scope["index"], scope["D"], scope["Dr"]
    run("docs/faiss.md", "faiss-swap-after", scope=scope)
    mih, queries = scope["index"], scope["queries"]
    assert np.array_equal(scope["D"], faiss_D)
    assert np.array_equal(np.sort(scope["Dr"]), np.sort(faiss_Dr))
    assert faiss_index.ntotal == mih.ntotal == 1998
    # 2,000 random codes: "auto" scans; "never" runs multi-index hashing
    D, I = mih.search(queries, 10, params={"fallback": "never"})
    assert_did_its_own_work(mih)
    assert np.array_equal(D, faiss_index.search(queries, 10)[0])
    D2, I2 = mih.search(queries, 10)
    assert np.array_equal(D2, D) and np.array_equal(I2, I)  # one tie rule: the same ids either way


def test_faiss_float_swap_finds_what_faiss_finds(tmp_path, monkeypatch):
    """docs/faiss.md's float swap: annbin's results against the faiss index it replaces, faiss's ids."""
    monkeypatch.chdir(tmp_path)
    scope = run("docs/faiss.md", "faiss-float")
    _, want = scope["faiss_index"].search(scope["queries"], 10)
    found = scope["ids"]
    assert np.isin(found, np.arange(3_000) + 10_000).all() and scope["scores"].dtype == np.float32
    assert recall_at_10(found, want) >= 0.9


def test_ci_runs_the_readme_commands():
    """README's test command (install with extras, lint, tests) is what .ci/run does, step for step;
    its bench command installs the core alone (no extras) and runs the default bench."""
    bench, tests = block("README.md", "bench-command").strip(), block("README.md", "test-command").strip()
    venv = "python3 -m venv .venv && . .venv/bin/activate && "
    assert bench == venv + "pip install . && annbin bench"
    assert tests.startswith(venv + "pip install ")
    install, *steps = tests.split(" && pip install ")[1].split(" && ")
    ci = (ROOT / ".ci" / "run").read_text().splitlines()
    assert f"python -m pip install --quiet {install}" in ci
    assert [line for line in ci if line in steps] == steps  # each step, in the README's order
