"""``python -m adaptivocab``: see cli.py."""

from adaptivocab.cli import main

raise SystemExit(main())
