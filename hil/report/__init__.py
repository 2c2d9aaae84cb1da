"""Reports people would rather look at than read: timelines of what the lab did."""
