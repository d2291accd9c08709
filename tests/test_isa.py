"""The benchmarks' instruction-set settings (`benchmarks.isa`): ``avx2-cpuid`` makes a real
child process see a CPU without AVX-512 while keeping AVX2, and leaves other crashes
crashes; where CPUID cannot be masked it says why."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from benchmarks import cpu_flag_set
from benchmarks.isa import AVX2_CAPS, IsaUnavailable, isa_environment

_FEATURES = """
import json, torch
from numpy._core._multiarray_umath import __cpu_features__ as f
print(json.dumps({"avx2": f["AVX2"], "fma": f["FMA3"], "avx512f": f["AVX512F"],
                  "torch": torch.backends.cpu.get_cpu_capability()}))
"""


def _features(env: dict[str, str]) -> dict:
    done = subprocess.run([sys.executable, "-c", _FEATURES], env={**os.environ, **env},
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_settings_and_refusals(tmp_path: Path) -> None:
    assert isa_environment("native") == {}
    assert isa_environment("avx2") == AVX2_CAPS
    with pytest.raises(ValueError, match="unknown ISA setting"):
        isa_environment("avx9")
    done = subprocess.run([sys.executable, "-m", "benchmarks.isa", "avx9", "true"],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 2 and "usage" in done.stderr


def test_avx2_cpuid_hides_avx512_and_keeps_avx2(tmp_path: Path) -> None:
    if "cpuid_fault" not in cpu_flag_set():
        with pytest.raises(IsaUnavailable, match="CPUID faulting"):
            isa_environment("avx2-cpuid", tmp_path)
        return
    env = isa_environment("avx2-cpuid", tmp_path)
    assert env["LD_PRELOAD"].startswith(str(tmp_path))
    # PYTHONFAULTHANDLER: a program that installs its own SIGSEGV handler keeps the mask
    native, masked = _features({}), _features({**env, "PYTHONFAULTHANDLER": "1"})
    assert masked["avx512f"] is False
    assert masked["avx2"] == native["avx2"] and masked["fma"] == native["fma"]
    if native["avx2"]:
        assert masked["torch"] == "AVX2"
    # the command-line form runs a command under the setting
    done = subprocess.run([sys.executable, "-m", "benchmarks.isa", "avx2-cpuid",
                           sys.executable, "-c", _FEATURES], capture_output=True, text=True,
                          timeout=120, env={**os.environ, "XDG_CACHE_HOME": str(tmp_path)})
    assert done.returncode == 0, done.stderr[-2000:]
    assert json.loads(done.stdout.strip().splitlines()[-1])["avx512f"] is False
    # a segmentation fault that is not a CPUID still kills the process
    done = subprocess.run([sys.executable, "-c", "import ctypes; ctypes.string_at(0)"],
                          env={**os.environ, **env}, capture_output=True, timeout=60)
    assert done.returncode == -signal.SIGSEGV
