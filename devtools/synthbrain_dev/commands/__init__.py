"""The ``synthbrain-dev`` verbs, one module each: its parser registered beside its handler
(``register(subparsers)``); :mod:`synthbrain_dev.cli` assembles them."""
