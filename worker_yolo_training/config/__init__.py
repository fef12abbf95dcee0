"""The configuration: every option declared once (`options.py`), the value parsers, the local
configuration file, the command-line arguments and the rules of Ultralytics' training arguments.

The manifests and the documentation's option table are generated from the declarations by
`python -m worker_yolo_training.config.manifests` (`make manifests`), a build tool the worker never
imports."""

from worker_yolo_training.config.arguments import (
    DEFAULT_CONCURRENCY,
    DEFAULT_RETRIES,
    IMAGE_TIMEOUT,
    add_arguments,
    check_arguments,
    check_folders,
    fetch_concurrency,
    local_cache,
)
from worker_yolo_training.config.file import MAX_CONFIG_BYTES, read_config_file
from worker_yolo_training.config.options import (
    GROUP_SEPARATOR,
    OPTIONS,
    ConfigurationError,
    Option,
    TrainingConfig,
    key_of,
    parse_config,
    recorded_settings,
)
from worker_yolo_training.config.teklia import TEKLIA_KEYS, TekliaKey
from worker_yolo_training.config.ultralytics_args import (
    CHECK_TABLES,
    NOT_TRAINING_ARGUMENTS,
    OPTIMIZERS,
    WORKER_TRAINING_ARGUMENTS,
    ultralytics_check_tables,
    ultralytics_defaults,
)
from worker_yolo_training.config.values import IMAGE_SIZE_STRIDE, MANUAL

__all__ = [
    "CHECK_TABLES",
    "DEFAULT_CONCURRENCY",
    "DEFAULT_RETRIES",
    "GROUP_SEPARATOR",
    "IMAGE_SIZE_STRIDE",
    "IMAGE_TIMEOUT",
    "MANUAL",
    "MAX_CONFIG_BYTES",
    "NOT_TRAINING_ARGUMENTS",
    "OPTIMIZERS",
    "OPTIONS",
    "TEKLIA_KEYS",
    "WORKER_TRAINING_ARGUMENTS",
    "ConfigurationError",
    "Option",
    "TekliaKey",
    "TrainingConfig",
    "add_arguments",
    "check_arguments",
    "check_folders",
    "fetch_concurrency",
    "key_of",
    "local_cache",
    "parse_config",
    "read_config_file",
    "recorded_settings",
    "ultralytics_check_tables",
    "ultralytics_defaults",
]
