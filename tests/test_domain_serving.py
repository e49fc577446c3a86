"""benchmarks/domain_serving.py end to end at a tiny size: demo model, vattention backend only.

The domain corpus is this package's own Python source (always present, no ../shared needed);
the patch tokenizer is built from the demo model's byte-level BPE on it.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
METRICS = ("requests_per_s", "output_tokens_per_s", "text_bytes_per_s", "ttft_median_ms",
           "ttft_p99_ms", "tpot_median_ms", "tpot_p99_ms", "mean_total_tokens",
           "kv_bytes_per_request", "peak_kv_mapped_bytes", "peak_kv_used_bytes", "pool_bytes")


def _corpus(path: Path) -> None:
    files = sorted((ROOT / "sarathi").rglob("*.py")) + sorted((ROOT / "adaptivocab").rglob("*.py"))
    path.write_text("\n\n".join(f.read_text(encoding="utf-8") for f in files), encoding="utf-8")


def test_domain_serving_demo(tmp_path: Path) -> None:
    corpus = tmp_path / "code.txt"
    _corpus(corpus)
    out = tmp_path / "domain.json"
    cmd = [sys.executable, str(ROOT / "benchmarks" / "domain_serving.py"), "--model-folder",
           "demo", "--backends", "vattention", "--corpus", str(corpus), "--corpus-chars",
           "200000", "--heldout-block-chars", "8000", "--num-swaps", "150", "--num-requests",
           "4", "--prompt-tokens", "48", "--output-tokens", "24", "--warmup", "1",
           # A tiny run lasts a few hundred ms: poll /metrics often enough to see it.
           "--poll-interval", "0.01", "--json", str(out), "--work-dir", str(tmp_path / "work")]
    env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=240, env=env, cwd=ROOT)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    data = json.loads(out.read_text())
    assert data["info"]["commit"] and data["workload"]["requests"] == 4
    results = {r["tokenizer"]: r for r in data["results"]}
    assert set(results) == {"base", "patch"}
    for r in results.values():
        assert r["ok"] and r["completed"] == 4 and r["output_len_mismatches"] == 0, r
        for key in METRICS:
            assert isinstance(r[key], (int, float)) and r[key] > 0, (key, r[key])
        assert r["peak_kv_mapped_bytes"] <= r["pool_bytes"]
    base, patch = results["base"], results["patch"]
    assert patch["mean_total_tokens"] < base["mean_total_tokens"]
    assert patch["kv_bytes_per_request"] < base["kv_bytes_per_request"]
    assert patch["server_prompt_reduction"] > 0  # the server really used the patch tokenizer
    (row,) = data["comparison"]
    assert row["backend"] == "vattention" and row["tokens_per_request_%"] < 0
    # Every server was stopped: their logs end with the shutdown line.
    for name in ("base", "patch"):
        log = (tmp_path / "work" / f"server-{name}-vattention.log").read_text()
        assert "sarathi server stopped" in log
