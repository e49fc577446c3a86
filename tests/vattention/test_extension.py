"""The vattention._C extension: its build, and its logic against a fake driver.

The fake driver (fake_driver/fake_libcuda.c) backs "device memory" with host memory, so
the extension's page table, pool, rollback on driver errors, threading and cleanup run
for real on machines without a GPU.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
HERE = Path(__file__).resolve().parent


def _cuda_include() -> Path | None:
    for home in (os.environ.get("CUDA_HOME"), os.environ.get("CUDA_PATH"), "/usr/local/cuda"):
        if home and (Path(home) / "include" / "cuda.h").is_file():
            return Path(home) / "include"
    return None


def _compiler() -> str | None:
    return shutil.which(os.environ.get("CC", "cc")) or shutil.which("gcc")


needs_toolkit = pytest.mark.skipif(
    _cuda_include() is None or _compiler() is None,
    reason="needs the CUDA toolkit headers and a C compiler",
)


@needs_toolkit
@pytest.mark.skipif(
    importlib.util.find_spec("vattention._C") is None,
    reason="vattention._C is not built (python setup.py build_ext --inplace)",
)
def test_space_against_fake_driver(tmp_path: Path) -> None:
    lib = tmp_path / "libcuda.so.1"
    subprocess.run(
        [
            _compiler(),
            "-shared",
            "-fPIC",
            "-O1",
            f"-I{_cuda_include()}",
            "-Wl,-soname,libcuda.so.1",
            "-o",
            str(lib),
            str(HERE / "fake_driver" / "fake_libcuda.c"),
        ],
        check=True,
    )
    env = dict(
        os.environ,
        LD_LIBRARY_PATH=f"{tmp_path}:{os.environ.get('LD_LIBRARY_PATH', '')}",
        PYTHONPATH=f"{ROOT}:{os.environ.get('PYTHONPATH', '')}",
    )
    result = subprocess.run(
        [sys.executable, str(HERE / "fake_driver" / "exercise_space.py")],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.strip().endswith("ok")


@pytest.mark.gpu
@needs_toolkit
def test_extension_builds_from_clean_tree(tmp_path: Path) -> None:
    tree = tmp_path / "tree"
    tree.mkdir()
    for name in ("setup.py", "pyproject.toml"):
        if (ROOT / name).exists():
            shutil.copy(ROOT / name, tree / name)
    shutil.copytree(ROOT / "csrc", tree / "csrc")
    shutil.copytree(
        ROOT / "vattention",
        tree / "vattention",
        ignore=shutil.ignore_patterns("*.so", "__pycache__"),
    )
    build = subprocess.run(
        [sys.executable, "setup.py", "build_ext", "--inplace"],
        cwd=tree,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert build.returncode == 0, build.stdout + build.stderr
    assert list((tree / "vattention").glob("_C*.so"))
    probe = subprocess.run(
        [sys.executable, "-c", "import vattention._C as c; print(c.__file__, c.Space)"],
        cwd=tree,
        env=dict(os.environ, PYTHONPATH=str(tree)),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert probe.returncode == 0, probe.stderr
    assert str(tree) in probe.stdout
