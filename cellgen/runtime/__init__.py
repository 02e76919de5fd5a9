"""Running compiled cells: the incoming state of a step, and unrolling over time and layers."""
