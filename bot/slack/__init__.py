"""Drawing for Slack: pure functions from data to Block Kit, one module per surface."""
