"""Side-by-side timing of chainrule against PyTorch (``python -m benchmarks.compare``)."""
