#!/usr/bin/env python
"""`python tools/eval.py ...` = `cvkit eval ...` (see `cvkit eval --help`)."""

import sys

from cvkit.cli.eval import main

if __name__ == "__main__":
    sys.exit(main())
