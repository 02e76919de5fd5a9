"""Datasets for video prediction: Moving-MNIST-style digits made on the fly, and the standard file."""
from cellgen.data.moving_digits import MovingDigits
from cellgen.data.moving_mnist import MovingMNIST
from cellgen.data.sources import DataConfig, Splits, open_splits, parse_data_argument

__all__ = ["MovingDigits", "MovingMNIST", "DataConfig", "Splits", "open_splits", "parse_data_argument"]
