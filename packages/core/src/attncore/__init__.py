"""attncore."""
