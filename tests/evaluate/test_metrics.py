"""Metrics from Ultralytics' own metric objects: overall, per class, absent classes."""

import numpy as np
import pytest
from ultralytics.utils.metrics import DetMetrics, SegmentMetrics

from worker_yolo_training.evaluate import metrics_table, split_metrics

NAMES = ["text_line", "illustration", "stamp"]


def processed(metrics_class, target_classes):
    """Ultralytics metrics after one image where every target is predicted exactly."""
    metrics = metrics_class(names=dict(enumerate(NAMES)))
    targets = np.array(target_classes, dtype=float)
    n = len(targets)
    stat = {
        "tp": np.ones((n, 10), dtype=bool),
        "conf": np.linspace(0.9, 0.5, n),
        "pred_cls": targets.copy(),
        "target_cls": targets,
        "target_img": np.unique(targets),
        "im_name": "page.jpg",
    }
    if metrics_class is SegmentMetrics:
        stat["tp_m"] = np.ones((n, 10), dtype=bool)
    metrics.update_stats(stat)
    metrics.process()
    return metrics


@pytest.mark.parametrize("metrics_class", [DetMetrics, SegmentMetrics])
def test_absent_class_is_reported_as_absent_not_averaged(metrics_class):
    metrics = processed(metrics_class, [0, 0, 1])  # no "stamp" in this split
    kinds = ("box", "mask") if metrics_class is SegmentMetrics else ("box",)
    result = split_metrics(metrics, NAMES, images=1, kinds=kinds)
    assert result["all"]["images"] == 1 and result["all"]["instances"] == 3
    assert result["classes"]["stamp"] == {"images": 0, "instances": 0, "absent": True}
    line = result["classes"]["text_line"]
    assert line["instances"] == 2 and line["images"] == 1
    assert line["box"]["precision"] == pytest.approx(metrics.box.p[0], abs=1e-5)
    assert result["all"]["box"]["mAP50-95"] == pytest.approx(metrics.box.map, abs=1e-5)
    if metrics_class is SegmentMetrics:
        assert result["all"]["mask"]["mAP50"] == pytest.approx(metrics.seg.map50, abs=1e-5)
    else:
        assert "mask" not in result["all"]
    table = metrics_table({"val": result})
    stamp_row = next(row for row in table.splitlines() if "| stamp |" in row)
    assert "absent" in stamp_row and "0.000" not in stamp_row


def test_per_class_values_follow_ap_class_index_not_class_index():
    # Only classes 0 and 2 are present: Ultralytics' arrays have 2 entries, in that order
    metrics = processed(DetMetrics, [2, 2, 0])
    result = split_metrics(metrics, NAMES, images=1, kinds=("box",))
    assert result["classes"]["illustration"].get("absent") is True
    assert result["classes"]["stamp"]["instances"] == 2
    assert result["classes"]["stamp"]["box"]["recall"] == pytest.approx(metrics.box.r[1], abs=1e-5)
