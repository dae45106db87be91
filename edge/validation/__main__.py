"""`python -m edge.validation verify ...`: the same verify command as `amtrace-edge verify`."""

import sys

from .cli import main

sys.exit(main())
