"""The machine label that goes next to every benchmark figure names the CPU
model, its cores and the ISA extensions that decide the kernels."""

import pytest

from benchmarks.hardware import machine_info

XEON = """processor\t: 0
vendor_id\t: GenuineIntel
model name\t: Intel(R) Xeon(R) Processor
flags\t\t: fpu sse2 avx2 fma avx512f avx512_bf16 avx512_fp16 amx_tile amx_bf16 amx_int8
processor\t: 1
model name\t: Intel(R) Xeon(R) Processor
flags\t\t: fpu
"""
EPYC = """processor\t: 0
model name\t: AMD EPYC 7B13
flags\t\t: fpu sse2 avx2 fma
"""


@pytest.mark.parametrize("text, model, isa", [
    (XEON, "Intel(R) Xeon(R) Processor",
     ["avx2", "fma", "avx512f", "avx512_bf16", "avx512_fp16", "amx_tile", "amx_bf16"]),
    (EPYC, "AMD EPYC 7B13", ["avx2", "fma"]),
])
def test_machine_info_reads_model_and_isa_flags(tmp_path, text, model, isa):
    path = tmp_path / "cpuinfo"
    path.write_text(text)
    info = machine_info(str(path))
    assert info["cpu_model"] == model
    assert info["isa"] == isa  # the first processor's flags, in ISA_FLAGS order
    assert info["cpu_cores"] >= info["usable_cores"] >= 1
    assert info["label"] == f"{model}, {info['cpu_cores']} cores, {'/'.join(isa)}"


def test_machine_info_without_cpuinfo_still_labels(tmp_path):
    info = machine_info(str(tmp_path / "missing"))
    assert info["cpu_model"]
    assert info["isa"] == []
    assert "no AVX2/AVX-512/AMX" in info["label"]
