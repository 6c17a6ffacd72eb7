#!/usr/bin/env python
"""`python tools/train.py ...` = `cvkit train ...` (see `cvkit train --help`)."""

import sys

from cvkit.cli.train import main

if __name__ == "__main__":
    sys.exit(main())
