"""``python -m seminfo.bench``: the benchmark of ``seminfo.bench.core``."""

import sys

from .core import main

sys.exit(main())
