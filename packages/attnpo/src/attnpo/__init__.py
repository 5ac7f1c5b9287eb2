"""attnpo."""
