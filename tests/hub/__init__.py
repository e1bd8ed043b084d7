"""Pretrained weights, model cards, publishing and the loopback Hub (a package: unique module names)."""
