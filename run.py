#!/usr/bin/env python
"""Run vachat from a checkout: `python run.py` serves; `python run.py --help` lists commands."""

import sys

from vachat.cli import main

if __name__ == "__main__":
    sys.exit(main())
