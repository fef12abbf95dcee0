"""A production-like run on this machine: `python scripts/fake_production_run.py`.

Starts the test suite's fake Arkindex API and S3 server, and a IIIF server for the sample's
images, on 127.0.0.1; then runs `worker-yolo-training` as a Ponos agent would (worker run id,
task token, no --dev), trains the sample for one epoch and publishes a model version in the fake.
Prints the API calls, the model version and the artifact.
"""

from __future__ import annotations

import json
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.production import training_task  # noqa: E402


def main() -> int:
    with (
        tempfile.TemporaryDirectory(prefix="fake-arkindex-") as directory,
        training_task(Path(directory)) as task,
    ):
        print(f"Fake Arkindex at {task.fake.url}, IIIF at {task.iiif.base_url}", flush=True)
        run = task.run()
        print(run.output)
        print("API calls:")
        for request in task.fake.requests:
            print(f"  {request.status} {request.name}")
        for version in task.fake.created_model_versions():
            body = {k: v for k, v in version.body.items() if k != "description"}
            print(f"Model version {version.id} ({version.state}):")
            print(json.dumps(body, indent=2))
            print(version.body.get("description", ""))
        for artifact in sorted(task.work_dir.iterdir()):
            print(f"Artifact: {artifact.name} ({artifact.stat().st_size} bytes)")
        return run.process.returncode


if __name__ == "__main__":
    sys.exit(main())
