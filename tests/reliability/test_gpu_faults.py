"""GPU-side faults, on a CUDA device: the KV pool running out while sequences grow, a real
CUDA error inside a step, and the vattention extension failing to load.

A device-side error poisons the process's CUDA context, so that case (and the one that hides
the extension) runs in a subprocess of its own."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from models import random_prompts, save_tiny_model
from sarathi import LLM, SamplingParams

pytestmark = pytest.mark.gpu
ROOT = Path(__file__).resolve().parents[2]


def _python(code: str, timeout: float = 240) -> subprocess.CompletedProcess[str]:
    env = dict(
        os.environ, PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])
    )
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        capture_output=True,
        text=True,
        timeout=timeout,  # a hang fails the test instead of stalling the suite
        env=env,
        cwd=ROOT,
    )


def test_the_kv_pool_running_out_while_sequences_grow_preempts(tmp_path):
    # Wide KV rows, so that 2 MiB pages make blocks of 32 tokens (mega) a test can outgrow.
    path = save_tiny_model(
        "llama", str(tmp_path / "wide"), hidden_size=1024, num_attention_heads=8,
        num_key_value_heads=8, head_dim=128, num_hidden_layers=16, intermediate_size=256,
        max_position_embeddings=1024, weight_std=1 / 32,
    )  # fmt: skip
    prompts = random_prompts(16, 384, seed=21, min_len=40, max_len=90)
    params = SamplingParams(temperature=0, max_tokens=60, ignore_eos=True)
    kw = {"dtype": "float32", "max_model_len": 512, "chunk_size": 256}
    roomy = LLM(path, **kw)
    want = [o.outputs[0].token_ids for o in roomy.generate(prompts, params)]
    block = roomy.engine.executor.worker.cache.geometry.block_bytes
    roomy.engine.shutdown()
    # 12 blocks of 32 tokens for 16 sequences that each grow to 100-150 tokens.
    tight = LLM(path, kv_cache_memory=12 * block, expected_request_tokens=32, **kw)
    idle = tight.engine.cache_stats()["slots_used"]  # before any request
    got = [o.outputs[0].token_ids for o in tight.generate(prompts, params)]
    assert tight.engine.stats.preemptions > 0
    assert got == want
    assert tight.engine.cache_stats()["slots_used"] == idle
    tight.engine.shutdown()


def test_a_cuda_error_inside_a_step_fails_the_request_and_the_health_check():
    result = _python(
        """
        import asyncio
        import torch
        from sarathi import SamplingParams
        from sarathi.config import EngineConfig
        from sarathi.engine.async_engine import AsyncEngine, EngineDeadError
        from sarathi.engine.llm_engine import LLMEngine

        engine = LLMEngine(EngineConfig.from_kwargs(model="demo", device="cuda"))
        runner = engine.executor.worker.runner
        launch, calls = runner.launch, [0]

        def failing(step):
            calls[0] += 1
            if calls[0] == 3:  # an out-of-bounds gather: a device-side assert, for real
                x = torch.zeros(4, device="cuda")
                x[torch.tensor([1 << 30], device="cuda")].sum().item()
            return launch(step)

        runner.launch = failing
        loop = AsyncEngine(engine)
        loop.start()

        async def main():
            params = SamplingParams(max_tokens=40, ignore_eos=True)
            try:
                async for _ in loop.generate("hello", params):
                    pass
                print("finished without an error")
            except EngineDeadError as e:
                print("request failed:", e)
            print("healthy:", loop.is_alive)
            try:
                async for _ in loop.generate("again", params):
                    pass
            except EngineDeadError:
                print("refused after the failure")

        asyncio.run(main())
        loop.shutdown(timeout=10)
        print("exited")
        """
    )
    out = result.stdout + result.stderr
    assert "request failed:" in result.stdout, out
    assert "CUDA error" in result.stdout or "device-side assert" in result.stdout, out
    assert "healthy: False" in result.stdout, out
    assert "refused after the failure" in result.stdout, out
    assert "exited" in result.stdout, out


def test_without_the_extension_the_engine_falls_back_with_a_logged_reason():
    result = _python(
        """
        import logging
        import sys
        sys.modules["vattention._C"] = None  # as if it were not built: importing it fails
        logging.basicConfig(level=logging.WARNING)
        from sarathi import LLM, SamplingParams

        llm = LLM("demo", device="cuda")
        out = llm.generate(["hello"], SamplingParams(max_tokens=4, ignore_eos=True))
        print("backend:", llm.engine.cache_plan.backend)
        print("tokens:", len(out[0].outputs[0].token_ids))
        """
    )
    out = result.stdout + result.stderr
    assert result.returncode == 0, out
    assert "backend: dense" in result.stdout and "tokens: 4" in result.stdout, out
    assert "cuda backend is unavailable" in result.stderr, out
