"""Flax backbones (torchvision layout) and the heads methods put on them."""
