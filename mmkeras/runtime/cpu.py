"""`cpu_name`: the model name of this machine's CPU, for benchmark figures (no TensorFlow).

Latency ratios differ by CPU family: the same int8 graph was 0.76x the float
one on an AMD EPYC and 1.2x on an Intel Xeon
(docs/design.md#int8-latency-on-xnnpack), so a figure that does not name its
CPU cannot be compared with another.

Example:
>>> cpu_name()  # doctest: +SKIP
'AMD EPYC 7B13'
"""

import platform
from pathlib import Path

CPUINFO = Path("/proc/cpuinfo")
UNKNOWN_CPU = "unknown CPU"


def cpu_name(cpuinfo: Path = CPUINFO) -> str:
    """The CPU's model name: Linux's `model name` in `cpuinfo`, else what `platform` knows of it.

    Args:
        cpuinfo: the file to read (`/proc/cpuinfo`; missing on macOS and
            Windows, and without `model name` on many ARM boards).

    Example:
    >>> cpu_name(Path("/no/such/cpuinfo")) == (platform.processor() or platform.machine() or UNKNOWN_CPU)
    True
    """
    try:
        text = cpuinfo.read_text(encoding="utf-8", errors="replace")
    except OSError:
        text = ""
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip() == "model name" and value.strip():
            return " ".join(value.split())
    return platform.processor() or platform.machine() or UNKNOWN_CPU
