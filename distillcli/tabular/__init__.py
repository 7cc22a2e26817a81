"""Tabular MDPs and students: the paper's studies and the exact checks of the update rule."""
