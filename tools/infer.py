#!/usr/bin/env python
"""`python tools/infer.py ...` = `cvkit infer ...` (see `cvkit infer --help`)."""

import sys

from cvkit.cli.infer import main

if __name__ == "__main__":
    sys.exit(main())
