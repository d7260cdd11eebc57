"""towerd.central."""
