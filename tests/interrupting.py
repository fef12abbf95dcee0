"""Runs the console script and interrupts it with a real SIGINT (what Ctrl-C sends) right after a
step of one stage: `python -m tests.interrupting STAGE ARGUMENTS...`. A stage without a step
here (training) is interrupted from outside by the test. `worker-killed` has each worker process
of the extraction killed by SIGKILL (what the system's out-of-memory killer sends) as it starts
building a chunk."""

from __future__ import annotations

import os
import signal
import sys
import time

from worker_yolo_training import cli, extract, train
from worker_yolo_training.extract import build
from worker_yolo_training.publish import archive

# Printed with the time the signal is sent
SENT = "SIGINT sent at"
# Stage → (owner, function) after whose first call the run is interrupted
STEPS = {
    "extraction": (extract.DatasetWriter, "add_set"),  # the first set written, others to go
    "evaluation": (train, "validate"),  # the first split validated
    "archiving": (archive, "create_tar_zst_archive"),  # the archive written, not yet renamed
}


def interrupt_after(owner, name: str) -> None:
    original = getattr(owner, name)

    def interrupted(*args, **kwargs):
        result = original(*args, **kwargs)
        print(f"{SENT} {time.time()}", file=sys.stderr, flush=True)
        os.kill(os.getpid(), signal.SIGINT)
        time.sleep(60)  # the worker's handler raises here
        return result

    setattr(owner, name, interrupted)


def kill_workers() -> None:
    main, original = os.getpid(), build.build_chunk

    def killed(*args, **kwargs):
        if os.getpid() != main:
            os.kill(os.getpid(), signal.SIGKILL)
        return original(*args, **kwargs)

    build.build_chunk = killed


if __name__ == "__main__":
    if sys.argv[1] in STEPS:
        interrupt_after(*STEPS[sys.argv[1]])
    elif sys.argv[1] == "worker-killed":
        kill_workers()
    sys.argv[1:] = sys.argv[2:]
    cli.main()
