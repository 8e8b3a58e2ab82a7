"""What the bot does with a pipeline client, whichever backend runs it: no Slack, no SQL."""
