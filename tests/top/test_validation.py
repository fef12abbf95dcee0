"""Errors before any GPU hour: bad configurations stop at once, with nothing downloaded;
interruptions stop cleanly; plots work offline."""

import os
import signal
import subprocess
import time

import yaml

from tests.helpers import IIIFExport, console_script


def test_bad_configuration_stops_before_reading_anything(tmp_path):
    export = IIIFExport(tmp_path, pages=4)
    try:
        export.config.write_text(
            yaml.safe_dump(
                {
                    "class_names": ["text_line", "text_line"],
                    "mode": "masks",
                    "num_epochs": 0,
                    "advanced": {
                        "worker_runs": ["yesterday"],
                        "training_kwargs": {"device": "cuda"},
                    },
                }
            )
        )
        process = export.run(tmp_path / "out", check=False)
    finally:
        export.server.stop()
    assert process.returncode == 2
    for key in (
        "class_names",
        "mode",
        "num_epochs",
        "advanced.worker_runs",
        "advanced.training_kwargs",
    ):
        assert f"`{key}`" in process.stderr
    assert "Traceback" not in process.stderr
    assert export.server.request_count == 0
    assert not (tmp_path / "out").exists()


def test_sigterm_stops_cleanly(tmp_path):
    export = IIIFExport(tmp_path, pages=30, slow_ids={})
    export.server.latency_ms = 5000  # downloads in flight when the signal comes
    try:
        process = subprocess.Popen(
            [console_script(), "--dev", "--database", str(export.database), "--config", str(export.config),
             "--output", str(tmp_path / "out"), "--no-cache", "--concurrency", "2", "--extract-only"],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=dict(os.environ),
        )  # fmt: skip
        deadline = time.monotonic() + 60
        while (
            export.server.image_requests < 2
            and process.poll() is None
            and time.monotonic() < deadline
        ):
            time.sleep(0.05)
        process.send_signal(signal.SIGTERM)
        signalled = time.monotonic()
        _, stderr = process.communicate(timeout=60)
        stopped_in = time.monotonic() - signalled
    finally:
        export.server.stop()
    assert process.returncode == 128 + signal.SIGTERM, stderr[-3000:]
    assert "Interrupted by SIGTERM" in stderr and "no model version published" in stderr
    # Docker gives 10 s before SIGKILL: in-flight and queued downloads are not waited for
    assert stopped_in < 3
    assert not (tmp_path / "out" / "crops.tmp").exists()
    assert not (tmp_path / "out" / "model").exists()
    assert not list((tmp_path / "out").rglob("*.partial"))


def test_plot_fonts_are_local_including_non_ascii(tmp_path):
    """Ultralytics draws non-ASCII labels with Arial.Unicode.ttf: it must be found offline."""
    script = (
        "from worker_yolo_training.train import prepare_environment\n"
        f"prepare_environment({str(tmp_path / 'yolo')!r})\n"
        "from ultralytics.utils.checks import check_font\n"
        "from ultralytics.utils.plotting import Annotator\n"
        "import numpy as np\n"
        "for name in ('Arial.ttf', 'Arial.Unicode.ttf'):\n"
        f"    assert str(check_font(name)).startswith({str(tmp_path / 'yolo')!r}), check_font(name)\n"
        "annotator = Annotator(np.zeros((64, 256, 3), dtype=np.uint8), pil=True, example='écriture')\n"
        "annotator.box_label([2, 2, 60, 60], 'écriture_manuscrite')\n"
        "print('ok')\n"
    )
    env = {key: value for key, value in os.environ.items() if key != "YOLO_CONFIG_DIR"}
    process = subprocess.run(
        [str(__import__("sys").executable), "-c", script],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert process.returncode == 0, process.stderr
    assert "Downloading" not in process.stderr
