import os
import signal
import sys


def _exit_interrupted(signum: int, frame: object) -> None:
    os._exit(130)


def exit_on_interrupt() -> None:
    """Start-up (the command line's imports of torch and transformers, then a command's model
    load) takes seconds and has nothing to undo: a Ctrl-C during it exits 130 at once. A
    KeyboardInterrupt raised inside other libraries' imports was swallowed by a __del__ (the
    run went on), aborted the process from a C++ callback, or made CPython's exit a death by
    SIGINT. The command puts Python's handler back when its work begins
    (cli.interruptible). Light to import: the sarathi package imports nothing eagerly."""
    signal.signal(signal.SIGINT, _exit_interrupted)


def main() -> int:
    """The ``sarathi`` console script and ``python -m sarathi``."""
    exit_on_interrupt()
    from sarathi.entrypoints.cli import main as cli_main

    return cli_main()


if __name__ == "__main__":
    sys.exit(main())
