"""Command-line shells. Each command module formats library results; none computes memory."""
