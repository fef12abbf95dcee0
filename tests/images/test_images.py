"""The image pipeline against a loopback IIIF server: URLs, faults, cache, fetch-once."""

import json
import re
import sqlite3
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
import yaml
from PIL import Image

from tests.exports import rectangle
from tests.helpers import all_failures, assert_complete_except, summary, written_elements
from worker_yolo_training.config import parse_config
from worker_yolo_training.core import Box, Skip
from worker_yolo_training.export import ImageInfo, Page
from worker_yolo_training.extract import Sample
from worker_yolo_training.images import CropRequest, iiif_url
from worker_yolo_training.modes import spec_for


@pytest.mark.parametrize(
    ("version", "crop", "size", "expected"),
    [
        (
            2,
            Box(10, 20, 300, 400),
            (150, 200),
            "http://s/iiif/i/10,20,300,400/150,200/0/default.jpg",
        ),
        (
            3,
            Box(10, 20, 300, 400),
            (150, 200),
            "http://s/iiif/i/10,20,300,400/150,200/0/default.jpg",
        ),
        (2, Box(0, 0, 1000, 800), (1000, 800), "http://s/iiif/i/full/full/0/default.jpg"),
        (3, Box(0, 0, 1000, 800), (1000, 800), "http://s/iiif/i/full/max/0/default.jpg"),
        (3, Box(5, 5, 100, 100), (100, 100), "http://s/iiif/i/5,5,100,100/max/0/default.jpg"),
    ],
)
def test_iiif_url_per_version(version, crop, size, expected):
    image = ImageInfo("i", "http://s/iiif/i/", 1000, 800, version)
    assert iiif_url(CropRequest(image, crop, *size)) == expected


def test_permanent_404_drops_only_its_elements_and_is_not_retried(make_export, tmp_path):
    export = make_export()
    missing = set(export.image_ids(3))
    export.server.status_overrides = dict.fromkeys(missing, 404)
    output = tmp_path / "out"
    process = export.run(output)
    assert_complete_except(export, output, missing)
    failures = all_failures(output)
    assert {export.pages[element] for element in failures} == missing
    for element, failure in failures.items():
        assert "HTTP 404" in failure["reason"]
        assert failure["source"].startswith(f"{export.server.base_url}/{export.pages[element]}/")
        assert element in process.stderr
    for image in missing:
        assert sum(n for path, n in export.server.paths.items() if f"/{image}/" in path) == 1


def test_corrupt_bytes_drop_only_their_elements(make_export, tmp_path):
    export = make_export()
    corrupt = set(export.image_ids(2, seed=1))
    export.server.corrupt_ids = set(corrupt)
    output = tmp_path / "out"
    export.run(output)
    assert_complete_except(export, output, corrupt)
    assert all(
        "not a valid image" in failure["reason"] for failure in all_failures(output).values()
    )


def test_random_server_errors_are_all_recovered(make_export, tmp_path):
    export = make_export(pages=60, transient_status=500)
    flaky = export.image_ids(3, seed=2)  # 5 % of the images answer 500 once
    export.server.transient_failures = dict.fromkeys(flaky, 1)
    output = tmp_path / "out"
    export.run(output)
    assert_complete_except(export, output, set())
    assert export.server.statuses[500] == 3
    assert (
        sum(
            r["skipped"].get("image download failed", 0) for r in summary(output)["splits"].values()
        )
        == 0
    )


def test_slow_responses_beyond_the_timeout_fail_after_retries(make_export, tmp_path):
    export = make_export(pages=16)
    slow = set(export.image_ids(1, seed=3))
    export.server.slow_ids = dict.fromkeys(slow, 3.0)
    output = tmp_path / "out"
    export.run(output, "--image-timeout", "0.5", "--image-retries", "2")
    assert_complete_except(export, output, slow)
    (failure,) = all_failures(output).values()
    assert "Timeout" in failure["reason"]


def test_too_many_failures_stop_before_training_with_a_clear_error(make_export, tmp_path):
    export = make_export(pages=16)
    export.config.write_text(yaml.safe_dump({"class_names": ["text_line"], "image_size": 320}))
    broken = export.image_ids(6, seed=4)
    export.server.status_overrides = dict.fromkeys(broken, 404)
    process = export.run(tmp_path / "out", check=False)
    assert process.returncode == 2
    assert "advanced.max_failed_images" in process.stderr and "failed to download" in process.stderr
    assert not (tmp_path / "out" / "dataset" / "data.yaml").exists()


def test_second_run_downloads_nothing(make_export, tmp_path):
    export = make_export(pages=20)
    export.run(tmp_path / "first")
    first = export.server.image_requests
    assert first == 20
    export.run(tmp_path / "second")
    assert export.server.image_requests == first
    reports = summary(tmp_path / "second")["splits"].values()
    assert sum(r["images_from_cache"] for r in reports) == 20
    assert sum(r["images_downloaded"] for r in reports) == 0
    assert written_elements(tmp_path / "second") == set(export.pages)


def test_corrupt_cache_entries_are_fetched_again(make_export, tmp_path):
    export = make_export(pages=8)
    export.run(tmp_path / "first")
    entries = sorted((export.root / "cache").glob("*/*.jpg"))
    entries[0].write_bytes(entries[0].read_bytes()[:100])  # truncated
    export.run(tmp_path / "second")
    assert export.server.image_requests == 9
    with Image.open(entries[0]) as image:
        image.load()


def test_element_in_two_sets_is_fetched_once_and_reported(make_export, tmp_path):
    export = make_export(pages=8)
    element, image = list(export.pages.items())[1]  # in the train set
    with sqlite3.connect(export.database) as connection:
        connection.execute(
            "INSERT INTO dataset_element (id, element_id, dataset_id, set_name) VALUES (?, ?, ?, ?)",
            ("second-set", element, export.dataset, "test"),
        )
    output = tmp_path / "out"
    process = export.run(output, "--no-cache")
    assert sum(n for path, n in export.server.paths.items() if f"/{image}/" in path) == 1
    assert summary(output)["leaks"] == {element: ["test", "train"]}
    assert (output / "dataset" / "images" / "train" / f"{element}.jpg").is_file()
    assert (output / "dataset" / "images" / "test" / f"{element}.jpg").is_file()
    assert element in process.stderr and "several splits" in process.stderr
    assert not (output / "crops.tmp").exists()


def test_iiif_v3_server(make_export, tmp_path):
    export = make_export(pages=8, version=3)
    export.run(tmp_path / "out")
    assert_complete_except(export, tmp_path / "out", set())
    assert export.server.statuses.get(400, 0) == 0


class Redirector(ThreadingHTTPServer):
    """Answers every request with a 301 to the same path on another server (http → https moves)."""

    def __init__(self, target: str):
        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):
                self.send_response(301)
                self.send_header("Location", target + self.path)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args):
                pass

        super().__init__(("127.0.0.1", 0), Handler)
        self.base_url = f"http://127.0.0.1:{self.server_address[1]}"
        threading.Thread(target=self.serve_forever, daemon=True).start()

    def stop(self):
        self.shutdown()
        self.server_close()


def test_redirects_are_followed(make_export, tmp_path):
    export = make_export(pages=6)
    origin = export.server.base_url.rsplit("/iiif", 1)[0]
    redirector = Redirector(origin)
    try:
        with sqlite3.connect(export.database) as connection:
            connection.execute(
                "UPDATE image SET url = replace(url, ?, ?)", (origin, redirector.base_url)
            )
        export.run(tmp_path / "out")
    finally:
        redirector.stop()
    assert_complete_except(export, tmp_path / "out", set())
    assert export.server.image_requests == 6


def test_crops_too_small_for_ultralytics_are_skipped_and_counted():
    page = Page(
        id="line", name="", type="text_line", polygon=rectangle(0, 0, 300, 6), rotation_angle=0,
        mirrored=False, image=ImageInfo("img", "http://s/img", 1000, 1000, 2),
    )  # fmt: skip
    config = parse_config({"class_names": ["word"], "image_size": 640})
    build_samples = spec_for(config.mode).build_samples
    assert build_samples([page], config) == [Skip.TooSmall]
    page.polygon = rectangle(0, 0, 300, 12)
    assert isinstance(build_samples([page], config)[0], Sample)


def test_results_come_in_element_order_whatever_the_download_order(make_export, tmp_path):
    """The first elements' images arrive last: a cold run still writes its truth lines in
    element order, as a warm run (no download) does, byte for byte."""
    export = make_export(pages=12)
    train = sorted(element for index, element in enumerate(export.pages) if index % 4)
    export.server.slow_ids = {export.pages[element]: 0.6 for element in train[:3]}
    export.run(tmp_path / "cold")
    export.server.slow_ids = {}
    export.run(tmp_path / "warm")
    truths = {}
    for run in ("cold", "warm"):
        folder = tmp_path / run / "dataset" / "truth"
        truths[run] = {path.name: path.read_bytes() for path in folder.glob("*.jsonl")}
    assert truths["cold"] == truths["warm"]
    lines = truths["cold"]["train.jsonl"].decode().splitlines()
    assert [json.loads(line)["element"] for line in lines] == train


def test_progress_is_logged_per_set_as_lines_with_its_total(make_export, tmp_path):
    # Without a terminal (Arkindex's task log): whole lines, never redrawn with a carriage
    # return, each with done/total, the rate and the time left
    export = make_export(pages=8)
    process = export.run(tmp_path / "out")
    assert "\r" not in process.stderr
    lines = [line for line in process.stderr.splitlines() if line.startswith("Elements of")]
    assert lines[0].startswith("Elements of train (train):   0% 0/6 [00:00<")
    done = {line.split(":")[0]: line for line in lines if "100%" in line}
    for name, total in (("train (train)", 6), ("val (dev)", 1), ("test (test)", 1)):
        assert re.search(
            rf"{re.escape(name)}: 100% {total}/{total} \[.*<00:00, .*element/s, cached=0, downloaded",
            done[f"Elements of {name}"],
        )
