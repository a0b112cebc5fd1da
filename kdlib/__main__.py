"""`python -m kdlib ...` entry point."""

import sys

from kdlib.cli import main

sys.exit(main())
