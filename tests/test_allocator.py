import os
import subprocess
import sys

import pytest

from bench.allocator import malloc_mode

# allocates and frees a 96 MB tensor (above glibc's largest mmap threshold) 25 times, as a CPU
# training step does with its activations, and prints the minor page faults of the last 20 (a kept
# heap settles within a few, then faults again only now and then)
PROBE = """
import resource, torch
from bench.allocator import keep_freed_memory, malloc_mode
kept = keep_freed_memory()
def faults():
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(5):
    torch.ones(24 * 2**20).sum()
before = faults()
for _ in range(20):
    torch.ones(24 * 2**20).sum()
print(kept, malloc_mode(), faults() - before)
"""


def probe(**env: str) -> tuple[str, str, int]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("MALLOC_", "BENCH_MALLOC"))}
    out = subprocess.run(
        [sys.executable, "-c", PROBE], env={**clean, **env}, capture_output=True, text=True
    )
    assert out.returncode == 0, out.stderr
    kept, mode, faults = out.stdout.split()
    return kept, mode, int(faults)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's malloc")
def test_kept_memory_stops_refaulting_large_tensors_and_system_leaves_malloc_alone():
    kept, kept_mode, kept_faults = probe()
    system, system_mode, system_faults = probe(BENCH_MALLOC="system")
    assert (kept, kept_mode) == ("True", "keep")
    assert (system, system_mode) == ("False", "system")
    pages = 20 * 96 * 2**20 // 4096  # every page of every allocation faulted in again
    assert system_faults > pages * 0.9
    assert kept_faults < pages / 4


def test_malloc_mode_reads_the_environment(monkeypatch):
    monkeypatch.setenv("MALLOC_MMAP_MAX_", "0")
    assert malloc_mode() == "keep"
    monkeypatch.delenv("MALLOC_MMAP_MAX_")
    assert malloc_mode() == "system"
