"""``python -m providers.local``: the four local providers and their control API (see run.py)."""

import sys

from providers.local.run import main

sys.exit(main())
