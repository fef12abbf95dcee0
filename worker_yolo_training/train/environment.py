"""Ultralytics offline: its own config dir, no network checks, no pip installs, fonts available
locally, our weights folder as its own.

Ultralytics reads its environment when first imported, and tries to download fonts, weights and
check models on the way. `prepare_environment()` must run before the first `import ultralytics`;
every heavy import stays inside functions so that configuration errors and `--extract-only` are
fast. Fonts are for Ultralytics' plots: a run that will not train (`--extract-only`) does not
install them.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

FONT_NAMES = ("Arial.ttf", "Arial.Unicode.ttf")


def weights_folder(config_dir: Path) -> Path:
    """Where pretrained weights are looked for and downloaded, in Ultralytics' config dir."""
    return Path(config_dir) / "weights"


def default_config_dir() -> Path:
    """Ultralytics' settings, fonts and weights: `$YOLO_CONFIG_DIR`, else the user cache dir."""
    if os.environ.get("YOLO_CONFIG_DIR"):
        return Path(os.environ["YOLO_CONFIG_DIR"])
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return cache / "worker-yolo-training" / "ultralytics"


def prepare_environment(config_dir: Path | None = None, fonts: bool = True) -> Path:
    """Make Ultralytics work offline: own config dir, no network checks, no pip installs, and
    with `fonts` (a run that trains) fonts available locally (`install_fonts`). Returns the
    folder where pretrained weights are looked for."""
    config_dir = Path(config_dir or default_config_dir())
    config_dir.mkdir(parents=True, exist_ok=True)
    os.environ["YOLO_CONFIG_DIR"] = str(config_dir)
    os.environ.setdefault("YOLO_OFFLINE", "1")
    os.environ["YOLO_AUTOINSTALL"] = "false"
    os.environ.setdefault("MPLCONFIGDIR", str(config_dir / "matplotlib"))
    if fonts:
        install_fonts(config_dir)
    weights_dir = weights_folder(config_dir)
    weights_dir.mkdir(exist_ok=True)
    return weights_dir


def install_fonts(config_dir: Path) -> None:
    """The fonts Ultralytics' plots ask for, where it looks (`<config dir>/Ultralytics`): DejaVu
    Sans from matplotlib under Arial's names (it covers non-ASCII text). Once they are there,
    nothing is imported: matplotlib's font manager costs 0.2 s, and the first time it builds
    its font cache (0.3 s more)."""
    fonts_dir = Path(config_dir) / "Ultralytics"
    fonts_dir.mkdir(parents=True, exist_ok=True)
    missing = [name for name in FONT_NAMES if not (fonts_dir / name).exists()]
    if missing:
        from matplotlib import font_manager

        dejavu = Path(font_manager.findfont("DejaVu Sans", fallback_to_default=True))
        for name in missing:
            shutil.copyfile(dejavu, fonts_dir / name)


def use_weights_dir() -> Path:
    """Point Ultralytics' own `weights_dir` setting at our weights folder and return it.

    Ultralytics fetches some weights by itself, e.g. `yolo26n.pt` for the GPU AMP check
    (`utils/checks.py` `check_amp`), from `weights_dir`: by default `<git root>/weights` or
    `./weights`. Offline, a file shipped in our folder (`$YOLO_CONFIG_DIR/weights`) is only found
    there once this setting points at it.
    """
    from ultralytics import utils

    weights_dir = weights_folder(Path(os.environ["YOLO_CONFIG_DIR"]))
    if utils.SETTINGS.get("weights_dir") != str(weights_dir):
        utils.SETTINGS.update(weights_dir=str(weights_dir))
    # Read by check_amp at call time; set once at import from the settings
    utils.WEIGHTS_DIR = weights_dir
    return weights_dir
