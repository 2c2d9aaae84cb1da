"""Putting things into guests: kernel modules (kmod), drivers, files."""
