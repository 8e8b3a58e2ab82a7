"""pipebot: Slack chat-ops for release pipelines."""
