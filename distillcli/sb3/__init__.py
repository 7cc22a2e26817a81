"""Everything that knows stable-baselines3's classes: reading a checkpoint safely, the algorithm families as data,
the teacher rebuilt from a checkpoint, and the student saved as an SB3 model."""
