"""The command-line options of our own: how many images are fetched at once."""

import argparse

import pytest

from worker_yolo_training.config import DEFAULT_CONCURRENCY, add_arguments, fetch_concurrency


def parsed(*arguments: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    return parser.parse_args(arguments)


@pytest.mark.parametrize(
    ("arguments", "expected"),
    [
        # downloads mostly wait for their server: many at once
        ((), DEFAULT_CONCURRENCY),
        # a folder's scans are decoded and resized here: one per CPU
        (("--images", "scans"), 3),
        # what the user asks, either way
        (("--concurrency", "8"), 8),
        (("--images", "scans", "--concurrency", "8"), 8),
    ],
)
def test_images_fetched_at_once(arguments, expected):
    assert fetch_concurrency(parsed(*arguments), cpus=3) == expected
