"""towerd.uplink."""
