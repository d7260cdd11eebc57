"""towerd.tracking."""
