"""The guest images and the debug kernel flavour (issue 15)."""
