from worker_yolo_training.cli import main

main()
