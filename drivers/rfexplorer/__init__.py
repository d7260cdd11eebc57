"""RF Explorer handheld spectrum analyser (USB serial, 500000 or 2400 baud)."""
