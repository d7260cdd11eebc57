"""The read-only live web console the daemon serves (issue 12): see docs/console.md."""
