"""Wall-clock timing that means "as waited for", also on a GPU.

CUDA kernels run asynchronously: reading a host clock right after launching them measures
the launch, not the work. ``clock_ms`` waits for the device first, so an interval between
two calls covers everything queued in between.
"""

from __future__ import annotations

import time


def clock_ms() -> float:
    """Milliseconds on a monotonic clock, after every queued CUDA kernel has finished."""
    import torch

    if torch.cuda.is_available() and torch.cuda.is_initialized():
        torch.cuda.synchronize()
    return time.perf_counter() * 1000
