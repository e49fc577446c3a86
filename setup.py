"""Builds the optional ``vattention._C`` extension; all metadata lives in pyproject.toml.

The extension only needs the CUDA toolkit's headers (it loads the driver at run time), so
it is built wherever a toolkit is found and skipped otherwise: ``pip install -e .`` works
on a machine without CUDA, and ``vattention`` then offers the cpu and dense backends.
"""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

import setuptools
from setuptools import Extension, setup

HERE = Path(__file__).resolve().parent

# pyproject.toml's license is an SPDX expression, which older setuptools reject with a
# schema error that does not say what to do. pip's isolated build fetches a new enough one;
# `python setup.py build_ext` and --no-build-isolation use the environment's.
if int(setuptools.__version__.split(".")[0]) < 77:
    sys.exit(f"setuptools {setuptools.__version__} is too old to read pyproject.toml; "
             "run: pip install -U 'setuptools>=77'")


def find_cuda_home() -> Path | None:
    """CUDA_HOME / CUDA_PATH, else the toolkit around nvcc, else /usr/local/cuda."""
    candidates = [os.environ.get("CUDA_HOME"), os.environ.get("CUDA_PATH")]
    nvcc = shutil.which("nvcc")
    if nvcc:
        candidates.append(str(Path(nvcc).resolve().parent.parent))
    candidates.append("/usr/local/cuda")
    for candidate in candidates:
        if candidate and (Path(candidate) / "include" / "cuda.h").is_file():
            return Path(candidate)
    return None


def extensions() -> list[Extension]:
    cuda_home = find_cuda_home()
    if cuda_home is None:
        print("vattention: no CUDA toolkit found (set CUDA_HOME); "
              "building without the vattention._C extension", file=sys.stderr)
        return []
    sources = sorted(str(p.relative_to(HERE)) for p in (HERE / "csrc").glob("*.cpp"))
    return [Extension(
        "vattention._C",
        sources=sources,
        include_dirs=[str(cuda_home / "include")],
        libraries=["dl"],
        extra_compile_args=["-std=c++17", "-O2", "-fvisibility=hidden", "-Wall", "-Wextra"],
        language="c++",
    )]


setup(ext_modules=extensions())
