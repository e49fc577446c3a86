import sys


def main() -> int:
    """The ``sarathi`` console script and ``python -m sarathi``."""
    try:
        # The command line's imports take seconds (torch, transformers); a Ctrl-C during them
        # is an interrupted start, not a crash: exit 130 without a traceback.
        from sarathi.entrypoints.cli import main as cli_main
    except KeyboardInterrupt:
        return 130
    return cli_main()


if __name__ == "__main__":
    sys.exit(main())
