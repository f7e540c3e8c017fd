"""Calibration-tuning (issue 22): probes on hidden states and LoRA adapters trained on graded answers, and the
estimators that load them (`probe`, `calibration_tuned`)."""
