"""
Keep the memory that freed tensors leave behind, for the next ones: batched evaluation.

glibc's ``malloc`` serves every block above its mmap threshold (which it raises by
itself up to 32 MiB at most) with a fresh ``mmap`` and gives it back to the kernel on
``free``. A batched filter step (25 episodes of K=2048 particles, as ``dmn_evaluate``
runs them) allocates and frees tensors larger than that at every step, so each step
page-faults and zero-fills them again: on the 2-core CPU machine that kernel time was
larger than the computation. Raising both thresholds keeps the freed blocks in the
process heap, where the next step reuses them. The numbers computed do not change, only
where their memory comes from; the cost is that the process keeps its peak memory.

One call per process, from the command-line tools that run batches
(``dmn_evaluate``, ``dmn_train``'s validation, ``dmn_results``); the node filters one
frame at a time, whose tensors stay below the threshold, and does not need it.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import platform

#: glibc's mallopt parameters (malloc.h)
M_TRIM_THRESHOLD = -1
M_MMAP_THRESHOLD = -3
#: Blocks up to this size come from the heap, not from a fresh mmap
MMAP_THRESHOLD_BYTES = 1 << 30
#: Freed heap memory up to this size stays in the process (mallopt takes a C int)
TRIM_THRESHOLD_BYTES = 2 ** 31 - 1


def keep_freed_memory(mmap_threshold: int = MMAP_THRESHOLD_BYTES,
                      trim_threshold: int = TRIM_THRESHOLD_BYTES) -> bool:
    """
    Raise glibc's mmap and trim thresholds for this process.

    Return whether both were set: False where the C library is not glibc (nothing is
    changed there). Raise ValueError for a threshold outside 1 .. 2**31 - 1.
    """
    for name, value in (('mmap_threshold', mmap_threshold),
                        ('trim_threshold', trim_threshold)):
        if not 0 < value <= TRIM_THRESHOLD_BYTES:
            raise ValueError(f'{name} must be in 1 .. {TRIM_THRESHOLD_BYTES}, got {value}')
    if platform.libc_ver()[0] != 'glibc':
        return False
    path = ctypes.util.find_library('c')
    if path is None:
        return False
    mallopt = getattr(ctypes.CDLL(path), 'mallopt', None)
    if mallopt is None:
        return False
    mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
    mallopt.restype = ctypes.c_int
    return bool(mallopt(M_MMAP_THRESHOLD, mmap_threshold)) and bool(
        mallopt(M_TRIM_THRESHOLD, trim_threshold))
