"""cotattn."""
