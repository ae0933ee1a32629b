"""`peak_memory_bytes`: this process's peak resident memory so far, for the figures that end a long command.

A run's `metrics.json` keeps it (`peak_memory_bytes`) and `train`, `qat` and
`align` print it beside the time: what a batch size, an image size or
`--freeze none` costs on this machine, read where the run says how it went.

Example:
>>> peak_memory_bytes() > 0
True
>>> format_bytes(1_604_000_000)
'1.60 GB'
"""

import sys


def peak_memory_bytes() -> int | None:
    """The high-water mark of this process's resident memory (RSS) in bytes; `None` where the OS has no
    `getrusage` (Windows). Children (a multi-worker run's other processes) are not counted."""
    try:
        import resource
    except ImportError:
        return None
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak if sys.platform == "darwin" else peak * 1024  # macOS reports bytes, Linux KiB


def format_bytes(count: int) -> str:
    """Decimal units, as `/usr/bin/time` and the docs' figures: MB below 1 GB, else GB."""
    return f"{count / 1e9:.2f} GB" if count >= 1e9 else f"{count / 1e6:.0f} MB"
