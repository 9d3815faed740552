"""Training: the two-stage trainer (stage 0/1/2, DeepSpeed) and detection-head calibration."""
