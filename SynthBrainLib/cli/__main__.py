"""``python -m SynthBrainLib.cli``: the ``synthbrain`` command (torchrun runs batches this way)."""

import sys

from . import main

sys.exit(main())
