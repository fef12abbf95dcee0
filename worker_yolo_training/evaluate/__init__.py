"""What the inference worker will produce, scored: the page-level evaluation (predicting each
element as Teklia's YOLO segmenter does, matching, calibrating the threshold, pictures), the
classifier's evaluation in classify mode, Ultralytics' metrics as tables, and the values the
evaluation hands on."""

from worker_yolo_training.evaluate.classification import (
    ElementPrediction,
    calibrate_classifier,
    classification_metrics,
    classification_tables,
    element_figures,
    evaluate_classifier,
)
from worker_yolo_training.evaluate.comparison import (
    CHANGED,
    Change,
    ClassSets,
    changes,
    class_sets,
    compare,
    element_f1,
)
from worker_yolo_training.evaluate.draw import (
    PREDICTION_COLOUR,
    TRUTH_COLOUR,
    draw_comparison,
    draw_element,
    picture_choice,
    prediction_label,
)
from worker_yolo_training.evaluate.evaluation import (
    COMPARED_SPLITS,
    COMPARISON_HEADING,
    Comparison,
    ElementEvaluation,
    Evaluation,
    Kept,
)
from worker_yolo_training.evaluate.metrics import metrics_table, split_metrics
from worker_yolo_training.evaluate.pages import (
    evaluate_pages,
    read_predictions,
    result_predictions,
    scale_ratios,
    segmenter_image,
    to_element_pixels,
)
from worker_yolo_training.evaluate.score import (
    MATCH_IOU,
    ElementScores,
    Scored,
    calibrate,
    choose_threshold,
    figures,
    match,
    page_table,
    score_element,
    split_figures,
    worst_elements,
    worst_elements_table,
)

__all__ = [
    "CHANGED",
    "COMPARED_SPLITS",
    "COMPARISON_HEADING",
    "MATCH_IOU",
    "PREDICTION_COLOUR",
    "TRUTH_COLOUR",
    "Change",
    "ClassSets",
    "Comparison",
    "ElementEvaluation",
    "ElementPrediction",
    "ElementScores",
    "Evaluation",
    "Kept",
    "Scored",
    "calibrate",
    "calibrate_classifier",
    "changes",
    "choose_threshold",
    "class_sets",
    "classification_metrics",
    "classification_tables",
    "compare",
    "draw_comparison",
    "draw_element",
    "element_f1",
    "element_figures",
    "evaluate_classifier",
    "evaluate_pages",
    "figures",
    "match",
    "metrics_table",
    "page_table",
    "picture_choice",
    "prediction_label",
    "read_predictions",
    "result_predictions",
    "scale_ratios",
    "score_element",
    "segmenter_image",
    "split_figures",
    "split_metrics",
    "to_element_pixels",
    "worst_elements",
    "worst_elements_table",
]
