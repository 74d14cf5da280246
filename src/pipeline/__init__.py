"""Differentiable NAS pipeline: data -> search -> select -> retrain -> tables."""

__version__ = "0.1.0"
