import sys

from sarathi.entrypoints.cli import main

if __name__ == "__main__":
    sys.exit(main())
