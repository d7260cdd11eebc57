"""towerd.outbox."""
