"""A progress bar for one long call into a C++ library (faiss, rabitqlib) that releases the GIL.

Such a call reports no progress of its own, so the bar shows the time elapsed, refreshed once a
second by a thread, rather than a fraction: splitting the call to count steps would change what it
builds (faiss's HNSW over 100k random 96-d vectors in 50 adds instead of one: recall@1 at
ef_search=32 fell from 0.52 to 0.23).
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator

__all__ = ["elapsed_bar"]


@contextlib.contextmanager
def elapsed_bar(desc: str, show: bool) -> Iterator[None]:
    """A tqdm bar ``"desc: 00:12"`` on stderr while the body runs (nothing when ``show`` is false)."""
    if not show:
        yield
        return
    from tqdm.auto import tqdm

    done = threading.Event()
    with tqdm(desc=desc, bar_format="{desc}: {elapsed}") as bar:
        def tick() -> None:
            while not done.wait(1.0):
                bar.refresh()

        thread = threading.Thread(target=tick, daemon=True)
        thread.start()
        try:
            yield
        finally:
            done.set()
            thread.join()
