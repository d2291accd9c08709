"""Reference corpora: the pyannote sample call, generated conversations with measured
references, single-speaker clips, manifests and pyannote protocols."""

from workbench.research.datasets.corpus import *  # noqa: F401,F403
from workbench.research.datasets.corpus import __all__  # noqa: F401
