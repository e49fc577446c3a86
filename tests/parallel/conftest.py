"""Fixtures for tensor-parallel tests: small GQA models and a private local Ray."""

import os

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


@pytest.fixture(scope="session")
def tp_models(tmp_path_factory):
    """name -> folder. ``llama``: 4 heads / 2 KV heads (one KV head per rank at tp=2);
    ``qwen2``: 4 heads / 1 KV head (replicated across ranks), tied embeddings, qkv bias,
    and an odd vocabulary (the last rank's vocab slice is padded)."""
    from models import save_tiny_model

    root = tmp_path_factory.mktemp("tp-models")
    return {
        "llama": save_tiny_model("llama", str(root / "llama")),
        "qwen2": save_tiny_model(
            "qwen2", str(root / "qwen2"), num_key_value_heads=1, vocab_size=383
        ),
    }


@pytest.fixture(scope="session")
def local_ray():
    """A private single-node Ray (no dashboard, no auth) for this test session."""
    try:
        import ray
    except ImportError:
        pytest.skip("ray is not installed (pip install 'sarathi[ray]')")
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    try:
        ray.init(
            num_cpus=2,
            include_dashboard=False,
            log_to_driver=False,
            runtime_env={"env_vars": {"PYTHONPATH": REPO}},
        )
    except Exception as e:  # noqa: BLE001 - any failure to start Ray here means "skip"
        pytest.skip(f"could not start a local Ray: {type(e).__name__}: {e}")
    yield ray
    ray.shutdown()
