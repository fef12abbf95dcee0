"""Arkindex worker that trains Ultralytics YOLO models on Arkindex datasets."""
