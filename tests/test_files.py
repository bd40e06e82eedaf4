"""Files at scale: memory-mapped index loads, and the append-only, crash-safe vector store of
``BinaryEmbeddingIndex`` (a process killed in an add or a save reloads at its last save)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
import warnings
from pathlib import Path

import numpy as np
import pytest
from conftest import clustered_codes

import annbin
from annbin._io import read_index_file, write_index_file
from annbin.index.registry import load_index

DIM = 32

# --- load_index(mmap=True) -------------------------------------------------------------------


@pytest.mark.parametrize("spec", ["flat", "hnsw:M=8,ef_search=20", "ivf:nlist=8,nprobe=3", "mih", "BFlat", "IDMap2,BHNSW8", "BHash8"])
def test_mmap_load_searches_like_a_read_load_and_copies_on_write(spec, tmp_path, rng):
    codes = clustered_codes(rng, 3000, 8)
    ids = None if spec.startswith("B") else rng.permutation(10_000)[:3000]
    index = annbin.make_index(spec, d=64)
    index.add(codes, ids)
    path = tmp_path / "index.annbin"
    index.save(str(path))
    before = path.read_bytes()
    read, mapped = load_index(path), load_index(path, mmap=True)
    queries = codes[:50]
    for a, b in zip(read.search(queries, 10), mapped.search(queries, 10)):
        np.testing.assert_array_equal(a, b)
    assert mapped.get_search_params() == read.get_search_params()
    faiss_backed = spec != "mih"
    assert (getattr(mapped, "_mapped", None) is not None) == faiss_backed  # the faiss data is a view of the file
    if not spec.startswith("BHash"):
        np.testing.assert_array_equal(mapped.get_codes(mapped.get_ids()[:20]), read.get_codes(read.get_ids()[:20]))
    if spec in ("flat", "hnsw:M=8,ef_search=20"):  # mapped codes are page cache, not RAM
        assert mapped.memory_bytes() <= read.memory_bytes() - 3000 * 8
    # writes copy the mapped data into RAM first (faiss would abort on a write to a view)
    more = clustered_codes(rng, 10, 8)
    for idx in (read, mapped):
        idx.add(more)
    assert getattr(mapped, "_mapped", None) is None
    assert mapped.memory_bytes() == read.memory_bytes()
    for a, b in zip(read.search(queries, 10), mapped.search(queries, 10)):
        np.testing.assert_array_equal(a, b)
    if spec in ("flat", "ivf:nlist=8,nprobe=3", "mih"):
        gone = read.get_ids()[:5]
        assert read.remove_ids(gone) == mapped.remove_ids(gone) == 5
        mapped.reset()
        assert mapped.ntotal == 0
    assert path.read_bytes() == before  # the file is never written


def test_mmap_load_outlives_its_wrapper_and_checks_the_file(tmp_path, rng):
    codes = clustered_codes(rng, 2000, 8)
    index = annbin.make_index("hnsw:M=8", d=64)
    index.add(codes)
    path = tmp_path / "i.annbin"
    index.save(str(path))
    D, I = index.search(codes[:5], 3)
    faiss_index = load_index(path, mmap=True).to_faiss()  # the annbin object is gone: the map lives on
    fD, fI = faiss_index.search(codes[:5], 3)
    np.testing.assert_array_equal(fD[:, 0], D[:, 0])
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 1
    path.write_bytes(bytes(data))
    with pytest.raises(ValueError, match="checksum"):
        load_index(path, mmap=True)
    path.write_bytes(bytes(data[: len(data) // 2]))
    with pytest.raises(ValueError, match="corrupted or truncated"):
        load_index(path, mmap=True)


def test_read_index_file_mapped_arrays_are_read_only_views(tmp_path):
    path = tmp_path / "f"
    arrays = {"a": np.arange(10, dtype=np.int64), "b": np.arange(6, dtype=np.uint8).reshape(2, 3), "e": np.zeros((0, 4), np.float32)}
    write_index_file(path, {"x": 1}, arrays)
    for mmap in (False, True):
        header, got = read_index_file(path, mmap=mmap)
        assert header == {"x": 1}
        for name, arr in arrays.items():
            np.testing.assert_array_equal(got[name], arr)
            assert got[name].dtype == arr.dtype and got[name].shape == arr.shape
        assert got["a"].flags.writeable == (not mmap)
        assert isinstance(got["a"], np.memmap) == mmap


# --- load_index of a stage of a saved BinaryEmbeddingIndex, or of a directory ------------------


def _saved_embedding_index(tmp_path: Path) -> Path:
    x = np.random.default_rng(7).standard_normal((50, DIM)).astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    index = annbin.BinaryEmbeddingIndex("flat", metric="ip")
    index.add(x)
    index.save(tmp_path / "ix")
    return tmp_path / "ix"


def test_load_index_of_a_stage_warns_and_names_the_whole_loader(tmp_path):
    root = _saved_embedding_index(tmp_path)
    stage = root / read_index_file(root / "embedding.annbin")[0]["index_file"]
    with pytest.warns(UserWarning, match=r"one stage of a saved BinaryEmbeddingIndex.*annbin\.BinaryEmbeddingIndex\.load\(") as caught:
        bare = annbin.load_index(stage, mmap=True)
    assert bare.ntotal == 50 and repr(str(root)) in str(caught[0].message)
    assert [w.filename for w in caught] == [__file__]  # one warning, at the caller's line
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the whole loads without a word, and so does a lone index file
        whole = annbin.BinaryEmbeddingIndex.load(root)
        bare.save(str(tmp_path / "alone.annbin"))
        assert load_index(tmp_path / "alone.annbin").ntotal == 50
    assert whole.ntotal == 50


def test_load_index_of_a_directory_says_it_is_one(tmp_path):
    root = _saved_embedding_index(tmp_path)
    with pytest.raises(ValueError, match=r"is a directory saved by BinaryEmbeddingIndex\.save.*annbin\.BinaryEmbeddingIndex\.load\("):
        annbin.load_index(root)
    with pytest.raises(ValueError, match="is a directory, not an index file"):
        annbin.load_index(tmp_path)


# --- the append-only vector store --------------------------------------------------------------


def _batches(n: int = 6, rows: int = 60) -> list[np.ndarray]:
    rng = np.random.default_rng(3)
    return [rng.standard_normal((rows, DIM)).astype(np.float32) for _ in range(n)]


def test_disk_store_appends_in_place(tmp_path):
    path = tmp_path / "v.npy"
    index = annbin.BinaryEmbeddingIndex("flat", store_vectors=path, oversample=4, metric="ip")
    batches = _batches()
    index.add(batches[0])
    inode = path.stat().st_ino
    head = path.read_bytes()[128 : 128 + batches[0].nbytes]
    for b in batches[1:]:
        index.add(b)
    assert path.stat().st_ino == inode  # the same file, grown: never replaced by a rewritten copy
    assert path.read_bytes()[128 : 128 + batches[0].nbytes] == head
    np.testing.assert_array_equal(np.load(path), np.concatenate(batches))  # still a plain .npy
    assert isinstance(index.vectors, np.memmap) and index.vectors.shape == (360, DIM)


def test_save_alternates_files_and_removes_the_previous_ones(tmp_path):
    batches = _batches()
    index = annbin.BinaryEmbeddingIndex("hnsw:M=8", oversample=4, metric="ip", store_vectors="ram")  # saved as a copy
    root = tmp_path / "s"
    names = []
    for b in batches[:3]:
        index.add(b)
        index.save(root)
        names.append(sorted(p.name for p in root.iterdir()))
        back = annbin.BinaryEmbeddingIndex.load(root)
        np.testing.assert_array_equal(back.search(b[:5], 5)[1], index.search(b[:5], 5)[1])
    assert names[0] == ["embedding.annbin", "index.annbin", "vectors.npy"]
    assert names[1] == ["embedding.annbin", "index.1.annbin", "vectors.1.npy"]
    assert names[2] == names[0]
    with pytest.warns(UserWarning, match="one stage of a saved BinaryEmbeddingIndex"):
        assert annbin.load_index(root / "index.annbin").ntotal == 180  # readable alone


def test_store_mapped_from_the_directory_is_committed_in_place(tmp_path):
    batches = _batches()
    root = tmp_path / "s"
    index = annbin.BinaryEmbeddingIndex("flat", store_vectors=tmp_path / "live.npy", oversample=4, metric="ip")
    index.add(batches[0])
    index.save(root)  # copied in once
    index = annbin.BinaryEmbeddingIndex.load(root, mmap=True)
    inode = (root / "vectors.npy").stat().st_ino
    for b in batches[1:]:
        index.add(b)
        index.save(root)
    assert (root / "vectors.npy").stat().st_ino == inode
    assert sorted(p.name for p in root.iterdir()) == ["embedding.annbin", "index.1.annbin", "vectors.npy"]
    back = annbin.BinaryEmbeddingIndex.load(root, mmap=False)
    np.testing.assert_array_equal(back.vectors, np.concatenate(batches))


@pytest.mark.parametrize("change", ["version 2", "no index_file", "no CRC"])
def test_records_of_other_layouts_are_refused(change, tmp_path):
    """Only the current record loads (0.1.0 reads what 0.1.0 writes): no fixed-name or CRC-less fallbacks."""
    root = tmp_path / "s"
    index = annbin.BinaryEmbeddingIndex("flat", oversample=4, metric="ip")
    index.add(_batches()[0])
    index.save(root)
    header, arrays = read_index_file(root / "embedding.annbin")
    if change == "version 2":
        header["version"] = 2
    else:
        header.pop("index_file" if change == "no index_file" else "vectors_crc32")
    write_index_file(root / "embedding.annbin", header, arrays)
    match = "does not hold a BinaryEmbeddingIndex of version 4" if change == "version 2" else "incomplete or malformed"
    with pytest.raises(ValueError, match=match):
        annbin.BinaryEmbeddingIndex.load(root)


def test_corrupted_vectors_fail_their_crc(tmp_path):
    index = annbin.BinaryEmbeddingIndex("flat", oversample=4, metric="ip")
    index.add(_batches()[0])
    index.save(tmp_path / "s")
    path = tmp_path / "s" / "vectors.npy"
    data = bytearray(path.read_bytes())
    data[200] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(ValueError, match="CRC-32"):
        annbin.BinaryEmbeddingIndex.load(tmp_path / "s")


# --- killed mid-add / mid-save ----------------------------------------------------------------

_CHILD = textwrap.dedent(
    """
    import os, sys, time
    import numpy as np
    import annbin, annbin._io, annbin.embed._vectors as V

    root, point, at = sys.argv[1], sys.argv[2], int(sys.argv[3])
    rng = np.random.default_rng(3)
    batches = [rng.standard_normal((60, 32)).astype(np.float32) for _ in range(6)]
    calls = {"n": 0}

    def pause():  # the parent kills us here
        open(root + ".paused", "w").close()
        time.sleep(600)

    def hook(original, when):
        def wrapped(*args, **kwargs):
            if when == "before":
                calls["n"] += 1
                if calls["n"] == at:
                    pause()
            out = original(*args, **kwargs)
            if when == "after":
                calls["n"] += 1
                if calls["n"] == at:
                    pause()
            return out
        return wrapped

    if point == "staged":  # the add's rows are written and fsynced; the add is not finished
        V.DiskVectors.stage = hook(V.DiskVectors.stage, "after")
    elif point == "added":  # the add finished (the .npy header shows its rows); not saved
        V.DiskVectors.commit = hook(V.DiskVectors.commit, "after")
    elif point == "torn":  # half of the add's rows reached the file
        def torn(f, data):
            calls["n"] += 1
            if calls["n"] == at:
                f.write(data[: len(data) // 2]); f.flush(); os.fsync(f.fileno())
                pause()
            f.write(data)
        V._write_rows = torn
    elif point == "saving":  # the save wrote its first-stage file, not its commit record
        import annbin.embed._embedding_files as files
        write = files.write_index_file
        def commit_hook(path, header, arrays):
            if str(path).endswith("embedding.annbin"):
                calls["n"] += 1
                if calls["n"] == at:
                    pause()
            return write(path, header, arrays)
        files.write_index_file = commit_hook

    index = annbin.BinaryEmbeddingIndex("flat", store_vectors=os.path.join(root, "vectors.npy"), oversample=4, metric="ip")
    for i, batch in enumerate(batches):
        if i == 1:
            index = annbin.BinaryEmbeddingIndex.load(root, mmap=True)  # grow the saved directory's store
        index.add(batch)
        index.save(root)
        print(i, flush=True)
    """
)


def _run_until_paused(root: Path, point: str, at: int) -> int:
    """Run the child until its pause point, SIGKILL it, return how many add + save rounds it completed."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(Path(annbin.__file__).parents[1]), os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.Popen([sys.executable, "-c", _CHILD, str(root), point, str(at)], stdout=subprocess.PIPE, env=env, text=True)
    flag = Path(str(root) + ".paused")
    deadline = time.monotonic() + 120
    while not flag.exists():
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            raise AssertionError(f"child never reached {point!r} #{at} (exit {proc.returncode})")
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    out, _ = proc.communicate()
    assert proc.returncode == -signal.SIGKILL
    return len(out.split())


@pytest.mark.parametrize(("point", "at", "completed"), [("staged", 3, 2), ("torn", 4, 3), ("added", 2, 1), ("saving", 3, 2)])
def test_killed_add_or_save_reloads_at_the_last_completed_state(point, at, completed, tmp_path):
    root = tmp_path / "idx"
    assert _run_until_paused(root, point, at) == completed
    batches = _batches()
    reference = annbin.BinaryEmbeddingIndex("flat", oversample=4, metric="ip")
    for b in batches[:completed]:
        reference.add(b)
    queries = np.concatenate(batches)[::7]
    for mmap in (True, False):
        back = annbin.BinaryEmbeddingIndex.load(root, mmap=mmap)
        assert back.ntotal == reference.ntotal == 60 * completed
        np.testing.assert_array_equal(back.vectors, reference.vectors)
        for a, b in zip(back.search(queries, 10), reference.search(queries, 10)):
            np.testing.assert_array_equal(a, b)
    # it carries on from there: the torn or uncommitted tail is overwritten, not kept
    back = annbin.BinaryEmbeddingIndex.load(root, mmap=True)
    back.add(batches[completed])
    back.save(root)
    reference.add(batches[completed])
    again = annbin.BinaryEmbeddingIndex.load(root)
    np.testing.assert_array_equal(again.vectors, reference.vectors)
    np.testing.assert_array_equal(again.search(queries, 10)[1], reference.search(queries, 10)[1])
    assert (root / "vectors.npy").stat().st_size == 128 + reference.vectors.nbytes
    assert len(list(root.iterdir())) == 3  # a killed save's uncommitted file is cleaned up too
