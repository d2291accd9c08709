"""``python -m workbench.research.datasets build-corpus|generate|sample``."""

import sys

from workbench.research.datasets.cli import main

sys.exit(main())
