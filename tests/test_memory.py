"""tunelab/memory.py: TUNELAB_MALLOC=lean holds glibc's mmap threshold, so freed tensors go
back to the system; by default glibc's heap keeps them."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

PROBE = """
import os, resource, sys
import torch
from tunelab.core.memory import keep_mmap_threshold
held = keep_mmap_threshold()
def rss():
    return int(open('/proc/self/statm').read().split()[1]) * os.sysconf('SC_PAGE_SIZE') / 2**20
big = torch.ones(16 * 2**20 // 4)  # 16 MiB: mapped; freeing it raises glibc's threshold
del big
blocks = [torch.ones(2**20) for _ in range(300)]  # 300 x 4 MiB, below a raised threshold
before = rss()
del blocks[::2]  # every other one: holes in a heap, which it cannot give back
print(held, before - rss())
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's malloc")
@pytest.mark.parametrize("setting", ["lean", ""])
def test_freed_tensors_go_back_to_the_system(setting: str) -> None:
    env = {**os.environ, "TUNELAB_MALLOC": setting}
    out = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True,
                         env=env, check=True).stdout.split()
    held, released = out[0] == "True", float(out[1])
    if setting != "lean":  # glibc's own behaviour: the heap keeps the freed blocks
        assert not held
        assert released < 100
    else:
        assert held
        assert released > 500  # the 600 MB of freed blocks left the process
