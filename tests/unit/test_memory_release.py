"""Freed memory goes back to the operating system (glibc, as on the machines the worker runs on)."""

import subprocess
import sys

import psutil
import pytest

from stream.worker.memory_release import release_free_memory


def test_memory_freed_among_blocks_still_in_use_goes_back_to_the_system():
    process = psutil.Process()
    # Blocks too big for Python's own allocator, freed but for every fiftieth: the heap
    # cannot shrink from its top, so the freed pages stay resident until trimmed.
    blocks = [bytes(2_000) + i.to_bytes(4, "little") for i in range(100_000)]
    kept = blocks[::50]
    del blocks
    before = process.memory_info().rss
    assert release_free_memory()
    after = process.memory_info().rss
    assert before - after > 100 * 2**20, (before, after)
    assert len(kept) == 2_000


FREE_LARGE_BLOCKS = """
import sys
import psutil
from stream.worker.memory_release import give_large_blocks_their_own_pages
if sys.argv[1] == "fixed":
    assert give_large_blocks_their_own_pages()
process = psutil.Process()
first = b"x" * (4 << 20)
del first  # glibc's own threshold now rises past 4 MB
blocks = [b"x" * (1 << 20) for _ in range(200)]
kept = blocks[::2]  # every other block stays: the heap cannot shrink past them
before = process.memory_info().rss
del blocks
print((before - process.memory_info().rss) / 2**20)
"""


@pytest.mark.parametrize(("threshold", "returned_mb"), [("default", (0, 10)), ("fixed", (90, 110))])
def test_large_blocks_freed_go_back_at_once_only_with_the_threshold_fixed(threshold, returned_mb):
    # In a process of its own: the allocator's settings are the whole process's.
    run = subprocess.run(
        [sys.executable, "-c", FREE_LARGE_BLOCKS, threshold], capture_output=True, text=True, check=True
    )
    low, high = returned_mb
    assert low <= float(run.stdout) <= high, run.stdout
