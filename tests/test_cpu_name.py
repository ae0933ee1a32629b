"""`cpu_name`: benchmark figures name the CPU that measured them."""

import platform

from mmkeras.runtime.cpu import cpu_name

CPUINFO = """processor\t: 0
vendor_id\t: AuthenticAMD
model name\t: AMD EPYC 7B13   64-Core Processor
flags\t\t: fpu vme

processor\t: 1
model name\t: AMD EPYC 7B13   64-Core Processor
"""


def test_the_model_name_of_linux_cpuinfo(tmp_path):
    (tmp_path / "cpuinfo").write_text(CPUINFO, encoding="utf-8")
    assert cpu_name(tmp_path / "cpuinfo") == "AMD EPYC 7B13 64-Core Processor"


def test_without_a_model_name_what_platform_knows(tmp_path):
    (tmp_path / "cpuinfo").write_text("processor\t: 0\nCPU implementer\t: 0x41\n", encoding="utf-8")
    expected = platform.processor() or platform.machine()
    assert cpu_name(tmp_path / "cpuinfo") == expected == cpu_name(tmp_path / "missing")
    assert expected
