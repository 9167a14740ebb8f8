"""Benchmarks (never run as tests). The product's package is imported first, as in the product itself, so its
process-wide settings (the OpenMP wait policy) are in place before a benchmark imports PyTorch."""

import imagematch  # noqa: F401
