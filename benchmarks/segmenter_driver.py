"""Runs in the YOLO segmenter's venv (teklia-yolo-worker 1.4.3), started by
segmenter_agreement.py: its real `YOLOSegmenter`, read-only, on the given elements.

argv: configuration.json (RetrieveWorkerRunConfiguration form), model dir, elements.json (as the
API serialises elements), output.json (per element: thumbnail size, objects in the element's
oriented frame, elements it would create).
"""

import json
import sys
import time
from dataclasses import asdict
from pathlib import Path

from arkindex_worker.models import Element
from arkindex_worker.worker.base import BaseWorker
from PIL import Image
from worker_yolo.segmenter import YOLOSegmenter


class NoApi:
    """The API client: any call would mean the run is not read-only."""

    def request(self, operation, *args, **kwargs):
        raise RuntimeError(f"unexpected API call {operation}")


class Recording(YOLOSegmenter):
    """The segmenter, recording what it finds and what it would create."""

    def configure(self) -> None:
        self.records = {}
        super().configure()

    def process_image(self, element, image):
        children = super().process_image(element, image)
        self.records[element.id] = {
            "thumbnail": list(Image.open(image).size),
            # In the element's oriented frame, before revert_orientation
            "children": [asdict(child) for child in children],
            "created": [],
        }
        return children

    def create_elements(self, parent, elements, **kwargs):
        # Page-frame polygons, after revert_orientation: what would reach Arkindex
        self.records[parent.id]["created"] = elements
        return [{"id": f"{parent.id}-{index}"} for index, _ in enumerate(elements)]


def main() -> None:
    config_path, model_dir, elements_path, output_path = sys.argv[1:]
    BaseWorker.setup_api_client = lambda self: setattr(self, "api_client", NoApi())
    # As the package's own tests do (tests/conftest.py): the element types exist
    YOLOSegmenter.check_required_types = lambda self, type_names, **kwargs: {
        name: name for name in type_names
    }
    sys.argv = ["worker-yolo-segmenter", "--dev", "--config", config_path]
    sys.argv += ["--extras-dir", model_dir]
    worker = Recording(description="agreement benchmark")
    worker.configure()
    configured = {
        "mode": str(worker.mode),
        "use_segment": worker.use_segment,
        "confidence_threshold": worker.confidence_threshold,
        "max_detection": worker.max_detection,
        "iou": worker.iou,
        "thumbnail_size": worker.thumbnail_size,
    }
    print("segmenter configured:", json.dumps(configured), flush=True)
    started = time.perf_counter()
    for element in json.loads(Path(elements_path).read_text()):
        worker.process_element(Element(element))
    elapsed = time.perf_counter() - started
    output = {"configured": configured, "elements": worker.records, "seconds": elapsed}
    Path(output_path).write_text(json.dumps(output))


if __name__ == "__main__":
    main()
