"""``python -m synthbrain_dev``: the ``synthbrain-dev`` command."""

import sys

from .cli import main

sys.exit(main())
