"""The embedded CodePipeline engine: ``LocalCodePipeline`` mirrors boto3's client."""

from bot.engine.client import LocalCodePipeline

__all__ = ["LocalCodePipeline"]
