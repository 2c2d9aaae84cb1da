"""Several libvirt hosts (issue 16): which hosts a run uses, and which worker runs where."""
