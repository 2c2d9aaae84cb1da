"""Putting things into guests: kernel modules (kmod), drivers, files; this repository's own
drivers and tools built on demand (reference)."""
