"""Channel notifications in the background: scheduler -> pipeline client -> Slack."""
