"""``python -m synthbrain_dev.bench --worker JSON``: one measurement in this process (the benchmark
starts one such process per path); prints its JSON result."""

import json
import sys

from .workers import worker_main

if len(sys.argv) == 3 and sys.argv[1] == "--worker":
    print(json.dumps(worker_main(json.loads(sys.argv[2]))))
else:
    sys.exit("usage: python -m synthbrain_dev.bench --worker JSON (use 'synthbrain-dev bench')")
