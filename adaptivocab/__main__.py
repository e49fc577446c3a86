"""``python -m adaptivocab`` and the ``adaptivocab`` console script: see cli.py."""

from adaptivocab.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
