import os
import sys

import pytest

sys.path.insert(0, os.path.dirname(__file__))

SHARED = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "..", "shared")


@pytest.fixture(scope="session", autouse=True)
def _isolated_cache(tmp_path_factory):
    """The demo model is built in a per-session cache, never in the user's home."""
    if "SARATHI_CACHE" not in os.environ:
        os.environ["SARATHI_CACHE"] = str(tmp_path_factory.mktemp("sarathi-cache"))
    yield


@pytest.fixture(scope="session")
def tiny_models(tmp_path_factory):
    """arch -> folder of a small random-weight HF model saved with safetensors."""
    from models import ARCHS, save_tiny_model

    root = tmp_path_factory.mktemp("models")
    return {a: save_tiny_model(a, str(root / a)) for a in ARCHS}


def pytest_collection_modifyitems(config, items):
    try:
        import torch

        has_gpu = torch.cuda.is_available()
    except ImportError:
        has_gpu = False
    if has_gpu:
        return
    skip = pytest.mark.skip(reason="needs a CUDA GPU (run on the device: scripts/gpu_tests.sh)")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)
