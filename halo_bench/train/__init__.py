"""The training stage: its config, the run folder, the setup, the step and the loop."""
