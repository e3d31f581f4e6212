"""Build the stand-in ``libnvidia-ml.so.1`` from nvml_standin.c with the machine's C compiler.

Used by the stand-in test suite (``conftest.py``), ``benchmarks/gpu_check.py --standin`` and
``benchmarks/sampler_overhead.py``. Nothing is written into the source tree: the library goes into
the folder the caller names (a pytest temporary folder, a ``tempfile`` folder).
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

SOURCE = Path(__file__).with_name("nvml_standin.c")
LIBRARY = "libnvidia-ml.so.1"  # the soname pynvml loads on Linux


class BuildError(RuntimeError):
    pass


def compiler() -> str | None:
    """``$CC``, else cc, gcc or clang on PATH; None when the machine has none."""
    for name in (os.environ.get("CC"), "cc", "gcc", "clang"):
        if name and shutil.which(name):
            return shutil.which(name)
    return None


def build(out_dir: str | os.PathLike[str]) -> Path:
    """Compile the stand-in into ``out_dir``; returns the folder to put on ``LD_LIBRARY_PATH``."""
    cc = compiler()
    if cc is None:
        raise BuildError("no C compiler (cc, gcc or clang) on PATH")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    cmd = [cc, "-O2", "-std=c11", "-shared", "-fPIC", "-fvisibility=hidden", "-Wall", "-Wextra", "-Werror",
           "-o", str(out / LIBRARY), str(SOURCE), "-lm"]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    if done.returncode != 0:
        raise BuildError(f"{' '.join(cmd)} failed:\n{done.stderr}")
    return out


def exported_symbols(folder: str | os.PathLike[str]) -> set[str] | None:
    """The library's exported function names (None without ``nm``)."""
    nm = shutil.which("nm")
    if nm is None:
        return None
    out = subprocess.run([nm, "-D", "--defined-only", str(Path(folder) / LIBRARY)], capture_output=True, text=True,
                         check=True).stdout
    return {line.split()[-1] for line in out.splitlines() if " T " in line}
