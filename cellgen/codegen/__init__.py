"""From a CellGraph to PyTorch: an fx GraphModule, and a standalone module file."""
