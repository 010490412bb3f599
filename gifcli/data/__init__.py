"""Datasets (torchvision layout), normalisation, splits and backdoor poisoning."""
