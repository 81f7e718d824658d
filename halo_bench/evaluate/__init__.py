"""The evaluation stage: a checkpoint on its suite -> results (metrics, calibration, tuning)."""
