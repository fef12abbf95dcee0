"""Runs in the YOLO classifier's venv (teklia-yolo-worker 1.4.3), started by
classifier_agreement.py and tests/core/test_classifier_contract.py: its real `YOLOClassifier`,
configured as Arkindex configures it (a worker run, not `--dev`), its API calls answered and
recorded by a fake client.

argv: api.json (what the fake answers: `worker_run` for RetrieveWorkerRun, `configuration` for
RetrieveWorkerRunConfiguration), model dir, elements.json (as the API serialises elements, or
`-` to stop after `configure()`), output.json (what `configure()` kept, the class and confidence
`process_image` returned per element, and every API call in order).
"""

import json
import os
import sys
import time
from pathlib import Path

from arkindex_worker.models import Element
from arkindex_worker.worker.base import BaseWorker
from worker_yolo.classifier import YOLOClassifier

WORKER_RUN = "11111111-1111-4111-8111-111111111111"


class FakeApi:
    """The Arkindex API client: answers what a classifier run reads, records every call, and
    fails on any other operation."""

    def __init__(self, answers: dict):
        self.answers = answers
        self.calls = []
        self.document = type("Document", (), {"links": {}})()

    def request(self, operation, *args, **kwargs):
        self.calls.append({"operation": operation, **kwargs})
        if operation == "RetrieveWorkerRun":
            return self.answers["worker_run"]
        if operation == "RetrieveWorkerRunConfiguration":
            return self.answers["configuration"]
        if operation == "CreateMLClass":
            return {"id": f"ml-class-{len(self.calls)}", **kwargs["body"]}
        if operation == "CreateClassification":
            return {"id": f"classification-{len(self.calls)}", **kwargs["body"]}
        raise RuntimeError(f"unexpected API call {operation}")

    def paginate(self, operation, *args, **kwargs):
        self.calls.append({"operation": operation, **kwargs})
        if operation == "ListCorpusMLClasses":
            return iter([])  # a corpus without ML classes: the classifier creates them
        raise RuntimeError(f"unexpected API call {operation}")


class Recording(YOLOClassifier):
    """The classifier, recording the class and confidence it finds for each element."""

    def configure(self) -> None:
        self.predictions = {}
        super().configure()

    def process_element(self, element):
        self.current = element.id
        super().process_element(element)

    def process_image(self, image):
        ml_class, confidence = super().process_image(image)
        self.predictions[self.current] = {"class": ml_class, "confidence": confidence}
        return ml_class, confidence


def main() -> None:
    api_path, model_dir, elements_path, output_path = sys.argv[1:]
    api = FakeApi(json.loads(Path(api_path).read_text()))
    BaseWorker.setup_api_client = lambda self: setattr(self, "api_client", api)
    # As Ponos runs it: a worker run, so not read-only (its creations go to the API)
    os.environ["ARKINDEX_WORKER_RUN_ID"] = WORKER_RUN
    sys.argv = ["worker-yolo-classifier", "--extras-dir", model_dir]
    worker = Recording(description="agreement benchmark")
    worker.configure()
    configured = {
        "confidence_threshold": worker.confidence_threshold,
        "thumbnail_size": worker.thumbnail_size,
        "image_extension": worker.image_extension,
        "resize_1px": worker.resize_1px,
        "model_names": list(worker.model.names.values()),
        "model_task": worker.model.task,
    }
    print("classifier configured:", json.dumps(configured), flush=True)
    started = time.perf_counter()
    if elements_path != "-":
        for element in json.loads(Path(elements_path).read_text()):
            worker.process_element(Element(element))
    output = {
        "configured": configured,
        "predictions": worker.predictions,
        "calls": api.calls,
        "seconds": time.perf_counter() - started,
    }
    Path(output_path).write_text(json.dumps(output))


if __name__ == "__main__":
    main()
