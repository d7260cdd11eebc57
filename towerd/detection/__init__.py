"""towerd.detection."""
