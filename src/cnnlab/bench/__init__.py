"""Benchmarks: each measures cnnlab side by side with the plain PyTorch/torchvision way, in one run."""
