"""What this CPU can run fast: the instruction-set features every CPU fast path is chosen by.

The same network runs many times faster, or slower, depending on the CPU's features: bf16 and int8 need
native instructions (AMX, AVX-512 BF16, VNNI) to pay, and without them bf16 is emulated (the README has the
measured ratios).  So the choices
(the default inference backend, bf16 or fp32 training, torchao's int8-mixed-bf16) read this module,
never a CPU name.  Torch-free: the flags come from ``/proc/cpuinfo`` (Linux), else from torch's own checks.
"""

from __future__ import annotations

import platform
from dataclasses import dataclass
from functools import lru_cache

#: The kinds the measured tables are keyed by, fastest hardware first (see :attr:`CpuInfo.kind`).
KINDS: tuple[str, ...] = ("amx", "avx512-bf16", "avx512", "avx2", "other")


@dataclass(frozen=True)
class CpuInfo:
    """The CPU's name and the instruction-set flags the fast paths depend on (Linux ``/proc/cpuinfo`` names)."""

    name: str
    flags: frozenset[str]

    @property
    def amx(self) -> bool:
        """Intel AMX tiles with bf16 and int8 (Sapphire Rapids and later)."""
        return {"amx_bf16", "amx_int8"} <= self.flags

    @property
    def native_bf16(self) -> bool:
        """bf16 arithmetic in hardware (AVX-512 BF16 or AMX); without it torch emulates bf16, slower than fp32."""
        return self.amx or "avx512_bf16" in self.flags

    @property
    def vnni(self) -> bool:
        """int8 dot products in one instruction (AVX-512 VNNI or AVX-VNNI)."""
        return bool({"avx512_vnni", "avx_vnni"} & self.flags)

    @property
    def kind(self) -> str:
        """One of :data:`KINDS`: the row of a measured table that applies to this CPU."""
        if self.amx:
            return "amx"
        if "avx512_bf16" in self.flags:
            return "avx512-bf16"
        if "avx512f" in self.flags:
            return "avx512"
        if "avx2" in self.flags:
            return "avx2"
        return "other"

    def describe(self) -> str:
        """``AMD EPYC (AVX2; no AVX-512, no AVX-512 BF16, no VNNI, no AMX)``: what a benchmark number was measured on."""
        has = {"AVX-512": "avx512f" in self.flags, "AVX-512 BF16": "avx512_bf16" in self.flags,
               "VNNI": self.vnni, "AMX": self.amx}
        present = [name for name, yes in has.items() if yes] or (["AVX2"] if "avx2" in self.flags else [])
        absent = [name for name, yes in has.items() if not yes]
        return f"{self.name} ({', '.join(present) or 'no AVX2'}" + (f"; no {', no '.join(absent)})" if absent else ")")


def _proc_cpuinfo() -> tuple[str, frozenset[str]] | None:
    try:
        with open("/proc/cpuinfo") as f:
            lines = f.read().splitlines()
    except OSError:
        return None
    name = next((line.split(":", 1)[1].strip() for line in lines if line.startswith("model name")), "")
    flags = next((line.split(":", 1)[1].split() for line in lines if line.startswith("flags")), None)
    return None if flags is None else (name or platform.processor() or platform.machine(), frozenset(flags))


def _torch_flags() -> frozenset[str]:
    """The flags torch's own CPU checks report (macOS, Windows), in ``/proc/cpuinfo``'s names."""
    import torch

    checks = {"avx2": "_is_avx2_supported", "avx512f": "_is_avx512_supported",
              "avx512_bf16": "_is_avx512_bf16_supported", "avx512_vnni": "_is_vnni_supported"}
    flags = {flag for flag, check in checks.items() if getattr(torch.cpu, check, lambda: False)()}
    if getattr(torch.cpu, "_is_amx_tile_supported", lambda: False)():
        flags |= {"amx_bf16", "amx_int8"}
    return frozenset(flags)


@lru_cache(maxsize=1)
def cpu_info() -> CpuInfo:
    """This machine's CPU (read once per process)."""
    found = _proc_cpuinfo()
    if found is not None:
        return CpuInfo(*found)
    return CpuInfo(platform.processor() or platform.machine(), _torch_flags())
