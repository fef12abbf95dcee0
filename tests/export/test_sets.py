"""Set selection and input checks, as plain functions (no subprocess)."""

from __future__ import annotations

import pytest

from tests.exports import ExportBuilder, rectangle
from worker_yolo_training.config import TrainingConfig
from worker_yolo_training.export import (
    DatasetInfo,
    ExtractionError,
    check_inputs,
    select_sets,
    split_of,
)
from worker_yolo_training.modes import spec_for

ONE = DatasetInfo("d1", "pages", ("train", "dev", "test"))
TWO = DatasetInfo("d2", "other", ("train",))


def names(sets) -> list[tuple[str, str]]:
    return [(s.dataset.id, s.name) for s in sets]


def test_every_set_of_the_only_dataset_by_default():
    assert names(select_sets([ONE])) == [("d1", "train"), ("d1", "dev"), ("d1", "test")]


def test_several_datasets_need_a_choice_and_the_error_lists_them():
    with pytest.raises(ExtractionError, match=r"holds 2 datasets.*d1 \(pages: train, dev, test\)"):
        select_sets([ONE, TWO])
    assert names(select_sets([ONE, TWO], [("d2", "train")])) == [("d2", "train")]


def test_unknown_set_lists_the_available_ones():
    with pytest.raises(ExtractionError, match=r"d1:val is not in the export\. Available: d1:train"):
        select_sets([ONE], [("d1", "val")])


def test_a_set_named_twice_is_read_once():
    assert names(select_sets([ONE], [("d1", "dev"), ("d1", "dev")])) == [("d1", "dev")]


def test_split_names():
    assert [split_of(name) for name in ("train", "dev", "VAL", "test", "extra")] == [
        "train", "val", "val", "test", None,
    ]  # fmt: skip


@pytest.fixture
def export(tmp_path):
    builder = ExportBuilder(tmp_path / "export.sqlite")
    dataset = builder.dataset(sets=("train", "dev", "test"))
    image = builder.image(100, 100)
    for set_name in ("train", "test"):
        page = builder.element("page", rectangle(0, 0, 100, 100), image)
        builder.element("text_line", rectangle(1, 1, 10, 10), image, parents=(page,))
        builder.add_to_set(dataset, set_name, page)
    builder.close()
    info = DatasetInfo(dataset, "pages", ("train", "dev", "test"))
    return select_sets([info]), {dataset: builder.path}


def test_unknown_class_names_are_listed_with_what_the_export_holds(export):
    sets, exports = export
    config = TrainingConfig(class_names=("text_line", "stamp"))
    with pytest.raises(ExtractionError) as error:
        check_inputs(config, spec_for(config.mode), sets, exports)
    assert "`class_names` stamp not found" in str(error.value)
    assert "Element types there: page (2), text_line (2)" in str(error.value)


def test_a_val_split_is_needed(export):
    sets, exports = export
    config = TrainingConfig(class_names=("text_line",))
    with pytest.raises(ExtractionError, match="No element in a dev or val set"):
        check_inputs(config, spec_for(config.mode), sets, exports)


class Counted:
    """A mode's classes (detection's), with the calls that count every class recorded."""

    class_kind = "element types"

    def __init__(self):
        self.spec = spec_for(TrainingConfig(class_names=("a",)).mode)
        self.counted = 0

    def has_class(self, export, name: str) -> bool:
        return self.spec.has_class(export, name)

    def class_counts(self, export) -> dict[str, int]:
        self.counted += 1
        return self.spec.class_counts(export)


def test_classes_are_counted_only_to_say_which_are_missing(export):
    # Counting every class reads the whole element table (half a second per 10,000 pages)
    sets, exports = export
    classes = Counted()
    with pytest.raises(ExtractionError, match="No element in a dev or val set"):
        check_inputs(TrainingConfig(class_names=("text_line", "page")), classes, sets, exports)
    assert classes.counted == 0
    with pytest.raises(ExtractionError, match="stamp not found"):
        check_inputs(TrainingConfig(class_names=("stamp",)), classes, sets, exports)
    assert classes.counted == 1
