"""Helpers shared by the tests, the benchmarks and the scripts: the tiny random-weight model, test images, fake
Moondream and Pinecone servers, live servers, hostile files, crash injection and the offline quality measures.

The product in src/ never imports it, and it is not part of the wheel; tests/, bench/ and scripts/ import it
from the repository root, never each other.
"""
