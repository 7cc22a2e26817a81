"""distillcli: distill trained reinforcement-learning policies (Czarnecki et al., AISTATS 2019)."""

__version__ = "0.2.0"
