"""The one factory that returns the configured pipeline backend.

Everything above this module talks to "a codepipeline client": boto3's, or the
embedded engine's ``LocalCodePipeline``, which answers the same calls with the
same shapes and errors.
"""

from __future__ import annotations

from typing import Any

import boto3
from botocore.config import Config

from bot.engine import LocalCodePipeline
from bot.settings import Settings

AWS_RETRIES = Config(retries={"mode": "adaptive", "max_attempts": 10})


def make_aws_client(settings: Settings) -> Any:
    """boto3's CodePipeline client through the standard credential chain, adaptive retries."""
    session = boto3.session.Session(
        profile_name=settings.aws_profile, region_name=settings.aws_region
    )
    return session.client("codepipeline", config=AWS_RETRIES)


def make_client(settings: Settings, *, run_worker: bool = True) -> Any:
    """The backend ``settings.backend`` names: ``LocalCodePipeline`` or boto3's client."""
    if settings.backend == "aws":
        return make_aws_client(settings)
    return LocalCodePipeline(
        database_url=settings.resolved_database_url,
        data_dir=settings.resolved_data_dir,
        repositories_dir=settings.resolved_repositories_dir,
        run_worker=run_worker,
        poll_seconds=settings.engine_poll_seconds,
        max_parallel_actions=settings.engine_max_parallel_actions,
        region=settings.aws_region,
    )
