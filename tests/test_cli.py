"""The command line, as a user runs it."""

import subprocess
import sys


def _run(*args, timeout=240):
    return subprocess.run([sys.executable, "-m", "sarathi", *args], capture_output=True,
                          text=True, timeout=timeout)


def test_help_lists_subcommands():
    r = _run("--help")
    assert r.returncode == 0
    for cmd in ("serve", "generate", "info"):
        assert cmd in r.stdout


def test_generate_on_the_demo_model_says_weights_are_random():
    r = _run("generate", "--prompt", "Hello", "--max-tokens", "5", "--temperature", "0",
             "--max-model-len", "256")
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip()
    assert "random weights" in r.stderr


def test_serve_help_renders():
    r = _run("serve", "--help")
    assert r.returncode == 0, r.stderr
    assert "--overlap-scheduling" in r.stdout


def test_generate_flags_come_from_the_config():
    r = _run("generate", "--help")
    for flag in ("--chunk-size", "--max-num-seqs", "--scheduler", "--kv-cache-backend",
                 "--model_name", "--model_block_size", "--patch_tokenizer_path", "--temperature",
                 "--stop"):
        assert flag in r.stdout


def test_bad_model_is_a_clean_error():
    r = _run("generate", "--model", "/does/not/exist", "--prompt", "x")
    assert r.returncode == 2
    assert "does not exist" in r.stderr and "Traceback" not in r.stderr


def test_bad_flag_value_is_a_clean_error():
    r = _run("generate", "--chunk-size", "0", "--prompt", "x")
    assert r.returncode == 2 and "chunk_size" in r.stderr and "Traceback" not in r.stderr
