"""Instruction-set settings of the benchmarks (``--isa``): what a CPU without AVX-512
gets, seen on one that has it.

- ``native``: the libraries pick their kernels from the CPU as it is.
- ``avx2``: environment caps (`AVX2_CAPS`) for CTranslate2, ATen, oneDNN and MKL. ONNX
  Runtime has no such setting, so its kernels (CAM++ here) stay AVX-512: the figures are
  optimistic for an AVX2-only CPU.
- ``avx2-cpuid``: the caps, and the process sees a CPU without AVX-512, AVX-VNNI or AMX
  (`native/avx2_cpuid.c`, preloaded: CPUID faulting answers every CPUID with those bits
  cleared), so every library that dispatches at run time -- ONNX Runtime included --
  takes its AVX2 path. Needs Linux CPUID faulting (the ``cpuid_fault`` CPU flag) and a C
  compiler; code compiled with ``-march=native`` for this CPU keeps its AVX-512.

Any command can run under a setting: ``python -m benchmarks.isa avx2-cpuid python -m
benchmarks live --server ...`` (caps and a CPUID mask inherited from the shell removed,
the setting's variables added, then the command in place of this process).
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Mapping, Optional

from benchmarks import ISA_CAPS, cpu_flag_set
from workbench.engine.provenance import CPUID_MASK_PREFIX as _PREFIX
from workbench.engine.provenance import cpuid_mask
from workbench.engine.provenance import model_cache_dir

__all__ = ["AVX2_CAPS", "ISA_SETTINGS", "IsaUnavailable", "child_environment", "cpuid_mask",
           "isa_environment"]

AVX2_CAPS = {"CT2_FORCE_CPU_ISA": "AVX2", "ATEN_CPU_CAPABILITY": "avx2",
             "ONEDNN_MAX_CPU_ISA": "AVX2", "MKL_ENABLE_INSTRUCTIONS": "AVX2"}
ISA_SETTINGS = ("native", "avx2", "avx2-cpuid")
_SOURCE = Path(__file__).with_name("native") / "avx2_cpuid.c"


class IsaUnavailable(RuntimeError):
    """The setting cannot be made on this machine (the message says why)."""


def isa_environment(isa: str, build_dir: Optional[Path] = None) -> dict[str, str]:
    """Environment variables that put a child process under `isa` (empty for native).
    Raises `IsaUnavailable` when ``avx2-cpuid`` cannot be had here."""
    if isa not in ISA_SETTINGS:
        raise ValueError(f"unknown ISA setting {isa!r}; choose from {', '.join(ISA_SETTINGS)}")
    if isa == "native":
        return {}
    if isa == "avx2":
        return dict(AVX2_CAPS)
    library = cpuid_mask_library(build_dir)
    preload = " ".join(p for p in (str(library), os.environ.get("LD_PRELOAD", "")) if p)
    return {**AVX2_CAPS, "LD_PRELOAD": preload}


def _without_mask(preload: str) -> str:
    """`LD_PRELOAD` without the CPUID mask library (entries split on spaces or colons)."""
    kept = [p for p in preload.replace(":", " ").split() if _PREFIX not in Path(p).name]
    return " ".join(kept)


def child_environment(isa: str, base: Optional[Mapping[str, str]] = None,
                      build_dir: Optional[Path] = None) -> dict[str, str]:
    """The whole environment of a child process run under `isa`: `base` (default this
    process's) without the ISA caps (`benchmarks.ISA_CAPS`) and the CPUID mask it may
    have inherited from the calling shell, then `isa`'s own settings -- a ``native`` row
    run from a capped or masked shell was native in name only. Raises `IsaUnavailable`
    as :func:`isa_environment` does."""
    env = {k: v for k, v in (os.environ if base is None else base).items()
           if k not in ISA_CAPS}
    preload = _without_mask(env.pop("LD_PRELOAD", ""))
    if preload:
        env["LD_PRELOAD"] = preload
    setting = isa_environment(isa, build_dir)
    if "LD_PRELOAD" in setting:  # the mask (first), then the caller's own libraries
        mask = setting["LD_PRELOAD"].split()[0]
        setting["LD_PRELOAD"] = " ".join(p for p in (mask, preload) if p)
    return {**env, **setting}


def cpuid_mask_library(build_dir: Optional[Path] = None) -> Path:
    """The preload library that hides AVX-512 from CPUID, compiled on first use into
    `build_dir` (default: the model cache folder), named by its source's hash."""
    if "cpuid_fault" not in cpu_flag_set():
        raise IsaUnavailable("this CPU or kernel offers no CPUID faulting (no 'cpuid_fault' "
                             "flag in /proc/cpuinfo), so CPUID cannot be masked")
    compiler = shutil.which("cc") or shutil.which("gcc")
    if compiler is None:
        raise IsaUnavailable("no C compiler (cc or gcc) to build the CPUID mask")
    source = _SOURCE.read_bytes()
    folder = build_dir or model_cache_dir()
    library = folder / f"{_PREFIX}{hashlib.sha256(source).hexdigest()[:12]}.so"
    if not library.is_file():
        folder.mkdir(parents=True, exist_ok=True)
        tmp = library.with_suffix(f".{os.getpid()}.tmp")
        done = subprocess.run([compiler, "-O2", "-shared", "-fPIC", "-o", str(tmp),
                               str(_SOURCE), "-ldl"], capture_output=True, text=True)
        if done.returncode != 0:
            raise IsaUnavailable(f"building the CPUID mask failed: {done.stderr.strip()[-300:]}")
        os.replace(tmp, library)
    return library


def main(argv: list[str]) -> int:
    """``python -m benchmarks.isa SETTING COMMAND [ARGS...]``: run COMMAND under SETTING."""
    if len(argv) < 2 or argv[0] not in ISA_SETTINGS:
        print(f"usage: python -m benchmarks.isa {{{','.join(ISA_SETTINGS)}}} COMMAND [ARGS...]",
              file=sys.stderr)
        return 2
    try:
        env = child_environment(argv[0])
    except IsaUnavailable as error:
        print(f"{argv[0]} is not available here: {error}", file=sys.stderr)
        return 1
    os.execvpe(argv[1], argv[1:], env)
    return 0  # not reached


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
