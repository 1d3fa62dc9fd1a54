"""Training: ``fit`` (``trainer``), the loop and its events, evaluation, checkpoints and resume, the weight EMA,
early stopping, the default recipes and the run directory; everything but the loop itself is an event handler."""
