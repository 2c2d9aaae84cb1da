"""Several libvirt hosts (issue 16): a simulated second host and its tests."""
