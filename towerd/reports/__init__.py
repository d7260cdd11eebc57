"""towerd.reports."""
