"""The benchmark scripts as a user runs them on a machine without a GPU."""

import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _bench(script, *args, timeout=120):
    # PYTHONPATH: the packages of this checkout, not wherever the environment installed them.
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(
        [ROOT, *filter(None, [os.environ.get("PYTHONPATH")])]))
    env.pop("SARATHI_ALLOW_LONG_MAX_MODEL_LEN", None)  # what the script sets, not the caller
    return subprocess.run([sys.executable, os.path.join(ROOT, "benchmarks", f"{script}.py"),
                           *args], capture_output=True, text=True, timeout=timeout, env=env)


def test_fragmentation_runs_on_the_cpu_backend(tmp_path):
    # Its flag was --page-size (dest page_size) while main read args.page_bytes: every run,
    # on its own default cpu backend too, died with an AttributeError.
    out = tmp_path / "frag.json"
    for flag in ("--page-bytes", "--page-size"):
        r = _bench("vattention_fragmentation", "--requests", "4", "--max-len", "4096",
                   flag, str(2 << 20), "--out", str(out))
        assert r.returncode == 0 and "Traceback" not in r.stderr, r.stderr
        assert "llama-3-8b" in r.stdout and out.exists()


@pytest.mark.slow
def test_a_default_length_workload_runs_on_the_demo_model():
    # The default prefix (2,000 tokens) plus the question and output outgrow the demo
    # model's 2,048 positions: the run died with a ValueError traceback before its first
    # request (throughput.py and scheduling.py at their defaults alike).
    r = _bench("prefix_caching", "--num-requests", "1", "--output-len", "1", "--layouts",
               "mega", timeout=240)
    assert r.returncode == 0 and "Traceback" not in r.stderr, r.stderr
    assert "mega" in r.stdout


@pytest.mark.parametrize("script", ["decode_configs", "decode_idle", "overlap_power",
                                    "prefill_configs", "small_m_linear", "tp_decode",
                                    "vattention_mapping"])
def test_gpu_benchmarks_without_a_gpu_say_so_in_one_line(script):
    # They died in their first CUDA call with a torch traceback (tp_decode, on "auto", set
    # out to decode a 7B shape on the CPU instead).
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    r = _bench(script, timeout=60)
    assert r.returncode == 1 and "Traceback" not in r.stderr, r.stderr
    assert r.stderr.strip() == r.stderr.strip().splitlines()[-1], r.stderr
    assert f"{script}: needs" in r.stderr and "CUDA GPU" in r.stderr


def test_serve_benchmark_without_a_server_says_so_in_one_line():
    # A refused connection was a 60-line httpx traceback; a malformed --url another.
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        url = f"http://127.0.0.1:{s.getsockname()[1]}"  # closed below: nothing listens
    r = _bench("serve", "--url", url, timeout=60)
    assert r.returncode == 1 and "Traceback" not in r.stderr, r.stderr
    assert r.stderr.strip().splitlines() == [r.stderr.strip()] and url in r.stderr
    assert "--start-server" in r.stderr
    r = _bench("serve", "--url", "http://256.1.1.1:8000", timeout=60)
    assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr
    assert "argument --url" in r.stderr


def test_structured_outputs_benchmark_runs_on_the_demo_model(tmp_path):
    # Its mask walk called StructuredOutputManager.accept without the sampled tokens'
    # positions the engine now passes: every run died with a TypeError after compiling.
    out = tmp_path / "so.json"
    r = _bench("structured_outputs", "--batch", "2", "--max-tokens", "4", "--walk-steps", "40",
               "--json", str(out), timeout=240)
    assert r.returncode == 0 and "Traceback" not in r.stderr, r.stderr
    assert out.exists()
