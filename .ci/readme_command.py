"""Print the N-th command of README.md's "Two commands on a fresh machine" (1: the main job, 2: the
tests), exactly as written, so that CI runs what a newcomer copies.

    python readme_command.py README.md N
"""

import re
import sys

text = open(sys.argv[1], encoding="utf-8").read()
section = text.split("## Two commands on a fresh machine", 1)[1].split("\n## ", 1)[0]
blocks = re.findall(r"```bash\n(.*?)\n```", section, flags=re.S)
print(blocks[int(sys.argv[2]) - 1].strip())
