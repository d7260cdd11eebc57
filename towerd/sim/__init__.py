"""towerd.sim."""
