"""``python -m adaptivocab`` and the ``adaptivocab`` console script: see cli.py."""

import os
import signal


def _exit_interrupted(signum: int, frame: object) -> None:
    os._exit(130)


def main() -> int:
    # The command line's imports (torch) take seconds and have nothing to undo: a Ctrl-C
    # during them exits 130 at once. A KeyboardInterrupt raised inside other libraries'
    # imports can be swallowed by a __del__, abort the process from a C++ callback, or make
    # CPython's exit a death by SIGINT. cli.main puts Python's handler back once the
    # arguments are read, so a command's own clean-up runs on a Ctrl-C.
    signal.signal(signal.SIGINT, _exit_interrupted)
    from adaptivocab.cli import main as cli_main

    return cli_main()


if __name__ == "__main__":
    raise SystemExit(main())
