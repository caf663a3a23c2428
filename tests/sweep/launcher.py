"""A stand-in for a launcher such as `horovodrun -np 1`: records that it started a run, then becomes the run.

Usage: python launcher.py RECORD_FILE COMMAND...
"""

import os
import sys

if __name__ == "__main__":
    record, command = sys.argv[1], sys.argv[2:]
    with open(record, "a") as f:
        f.write(" ".join(command) + "\n")
    os.execv(command[0], command)
