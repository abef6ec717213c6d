"""The machine a benchmark ran on, for the label next to every figure.

Backends rank differently on different CPUs (TensorFlow's oneDNN uses AMX
where it exists; JAX's and torch's fp32 paths do not), so every table names
the CPU model, its core count and the vector/matrix extensions that decide
the kernels: figures from different machine kinds must never be mixed.
"""

import os
import platform

# The ISA flags (as /proc/cpuinfo spells them) that change which kernels the
# backends pick, in the order they are printed.
ISA_FLAGS = ("avx2", "fma", "avx512f", "avx512_bf16", "avx512_fp16", "amx_tile", "amx_bf16",
             "asimd", "sve")


def _cpuinfo(path="/proc/cpuinfo"):
    """(model name, set of flags) from the first processor of /proc/cpuinfo."""
    model, flags = None, set()
    try:
        with open(path) as f:
            for line in f:
                key, _, value = line.partition(":")
                key = key.strip()
                if key == "model name" and model is None:
                    model = value.strip()
                elif key in ("flags", "Features") and not flags:
                    flags = set(value.split())
    except OSError:
        pass
    return model, flags


def machine_info(cpuinfo_path="/proc/cpuinfo"):
    """The machine as a dict: CPU model, cores this process may use, cores
    on the machine, the ISA flags of `ISA_FLAGS` present, and the label."""
    model, flags = _cpuinfo(cpuinfo_path)
    model = model or platform.processor() or platform.machine() or "cpu"
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    info = {
        "cpu_model": model,
        "cpu_cores": os.cpu_count(),
        "usable_cores": usable,
        "isa": [flag for flag in ISA_FLAGS if flag in flags],
    }
    info["label"] = machine_label(info)
    return info


def machine_label(info):
    isa = "/".join(info["isa"]) or "no AVX2/AVX-512/AMX"
    return f"{info['cpu_model']}, {info['cpu_cores']} cores, {isa}"


def hardware_label():
    """The one-line label of `machine_info` (CPU model, cores, ISA flags)."""
    return machine_info()["label"]
