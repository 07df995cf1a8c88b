"""Entry point of one sweep run in its own process: ``python -m sds3d.sweep.worker FN_REF JOB_JSON``."""

import sys

from .execute import worker_main

if __name__ == "__main__":
    sys.exit(worker_main(sys.argv[1:]))
