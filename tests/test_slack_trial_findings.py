"""Found by a new user trying issues 13 and 14 (through the real engine on SQLite and PostgreSQL,
the real Bolt app and the fake Slack):

* after a rollback, rolling the stage back again proposed the revision the stage already runs
  (the rollback's own target): the default target skips it;
* in a PARALLEL pipeline with two executions waiting at one gate, ``/pipeline approve NAME``
  approved the newest one silently: it now asks which, naming them.
"""

from __future__ import annotations

from typing import Any

from bot.ops.pipeline_ops import OpsError, PipelineOps
from tests.helpers import commit, wait_for
from tests.slack_bot import Bot, text_of
from tests.test_slack_parallel_retry import _status, _two_waiting
from tests.test_slack_rollback import deploy_pipeline, succeeded


def _wait_done(engine: Any, execution_id: str) -> None:
    def done() -> bool:
        status = engine.get_pipeline_execution(
            pipelineName="web", pipelineExecutionId=execution_id
        )["pipelineExecution"]["status"]
        return status not in ("InProgress", "Stopping")

    wait_for(done, timeout=60, what=f"execution {execution_id}")


def test_after_a_rollback_the_default_target_is_not_what_the_stage_already_runs(
    bot: Bot, repos_dir: Any
) -> None:
    bot.engine.create_pipeline(pipeline=deploy_pipeline())
    first = succeeded(bot, 1)[0]["pipelineExecutionId"]
    commit(repos_dir / "app", {"app.txt": "v2\n"}, "v2")
    second = bot.engine.start_pipeline_execution(name="web")["pipelineExecutionId"]
    _wait_done(bot.engine, second)
    commit(repos_dir / "app", {"app.txt": "v3\n"}, "v3")
    third = bot.engine.start_pipeline_execution(name="web")["pipelineExecutionId"]
    _wait_done(bot.engine, third)
    ops = PipelineOps(client=bot.engine, local=True)
    assert ops.rollback_target("web", "Deploy").execution_id == second

    rollback = bot.engine.rollback_stage(
        pipelineName="web", stageName="Deploy", targetPipelineExecutionId=second
    )["pipelineExecutionId"]
    _wait_done(bot.engine, rollback)
    # The stage runs `second`'s code now: the next rollback goes further back.
    assert ops.rollback_target("web", "Deploy").execution_id == first
    bot.command("rollback web Deploy", name="again")
    asked = text_of(bot.reply("again"))
    assert first[:8] in asked and second[:8] not in asked, asked


def test_approve_without_an_execution_asks_which_when_several_wait(bot: Bot) -> None:
    older, newer = _two_waiting(bot.engine)
    bot.command("approve web", name="which")
    answer = text_of(bot.reply("which"))
    assert "2 executions wait at Gate / Approve of `web`" in answer, answer
    assert older[:8] in answer and newer[:8] in answer
    assert _status(bot.engine, older) == "InProgress" and _status(bot.engine, newer) == "InProgress"
    ops = PipelineOps(client=bot.engine, local=True)
    try:
        ops.find_approval("web", "Gate", "Approve")
    except OpsError as exc:
        assert "name one" in exc.message
    else:
        raise AssertionError("an approval was picked among two waiting executions")
