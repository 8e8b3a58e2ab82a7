"""Issue 14: the real declarations from AWS's user guide (tests/data/pipelines/, copied from
../shared/data/pipelines/) run on the embedded engine as written, on SQLite and PostgreSQL.

Each gets what AWS would have: the S3 object or CodeCommit repository holding a CodeDeploy
revision like AWS's sample bundle (an ``appspec.yml`` copying a page to /var/www/html, with
BeforeInstall, ApplicationStart and ApplicationStop scripts). The deployment lands on the
local instance of its deployment group.
"""

from __future__ import annotations

import io
import zipfile
from pathlib import Path
from typing import Any

from bot.engine.declaration import parse_declaration_text, split_declaration
from tests.helpers import make_repo, wait_for
from tests.shapecheck import assert_output_shape

PIPELINES = Path(__file__).resolve().parent / "data" / "pipelines"

APPSPEC = """version: 0.0
os: linux
files:
  - source: /index.html
    destination: /var/www/html/
hooks:
  BeforeInstall:
    - location: scripts/install_dependencies
      timeout: 300
  ApplicationStart:
    - location: scripts/start_server
      timeout: 300
  ApplicationStop:
    - location: scripts/stop_server
      timeout: 300
"""
BUNDLE = {
    "appspec.yml": APPSPEC,
    "index.html": "<h1>Sample deployment</h1>\n",
    "scripts/install_dependencies": '#!/bin/sh\necho "installing on $DEPLOYMENT_GROUP_NAME"\n',
    "scripts/start_server": '#!/bin/sh\necho started > "$PIPEBOT_INSTANCE_ROOT/started"\n',
    "scripts/stop_server": "#!/bin/sh\necho stopped\n",
}


def _declaration(name: str) -> dict[str, Any]:
    declaration, _tags = split_declaration(parse_declaration_text((PIPELINES / name).read_text()))
    return declaration


def _run(engine: Any, declaration: dict[str, Any]) -> dict[str, Any]:
    response = engine.create_pipeline(pipeline=declaration)
    assert_output_shape("CreatePipeline", response)
    name = declaration["name"]
    (summary,) = engine.list_pipeline_executions(pipelineName=name)["pipelineExecutionSummaries"]

    def finished() -> dict[str, Any] | None:
        response = engine.get_pipeline_execution(
            pipelineName=name, pipelineExecutionId=summary["pipelineExecutionId"]
        )
        assert_output_shape("GetPipelineExecution", response)
        execution: dict[str, Any] = response["pipelineExecution"]
        return execution if execution["status"] not in ("InProgress", "Stopping") else None

    return wait_for(finished, timeout=60, what=f"{name}'s first execution")


def _instance(engine: Any, application: str, group: str) -> Path:
    return Path(engine.data_dir) / "codedeploy" / application / group


def test_the_s3_to_codedeploy_pipeline_of_the_user_guide_runs_as_written(engine: Any) -> None:
    declaration = _declaration("aws-userguide-pipelines-create.json")
    source = declaration["stages"][0]["actions"][0]["configuration"]
    bundle = io.BytesIO()
    with zipfile.ZipFile(bundle, "w") as archive:
        for path, content in BUNDLE.items():
            archive.writestr(path, content)
    obj = Path(engine.data_dir) / "s3" / source["S3Bucket"] / source["S3ObjectKey"]
    obj.parent.mkdir(parents=True)
    obj.write_bytes(bundle.getvalue())

    execution = _run(engine, declaration)

    assert execution["status"] == "Succeeded", execution.get("statusSummary")
    deploy = declaration["stages"][1]["actions"][0]["configuration"]
    root = _instance(engine, deploy["ApplicationName"], deploy["DeploymentGroupName"])
    assert (root / "var/www/html/index.html").read_text() == BUNDLE["index.html"]
    assert (root / "started").read_text().strip() == "started"


def test_the_cross_region_codecommit_to_codedeploy_pipeline_runs_as_written(
    engine: Any, repos_dir: Path
) -> None:
    declaration = _declaration("aws-userguide-actions-create-cross-region.json")
    source = declaration["stages"][0]["actions"][0]["configuration"]
    # Committed without the execute bit, as a zip often is: CodeDeploy's agent runs them anyway.
    make_repo(repos_dir / source["RepositoryName"], BUNDLE, "Sample bundle")

    execution = _run(engine, declaration)

    assert execution["status"] == "Succeeded", execution.get("statusSummary")
    deploy = declaration["stages"][1]["actions"][0]
    assert deploy["region"] == "us-east-1"  # kept; one machine, one region locally
    configuration = deploy["configuration"]
    root = _instance(engine, configuration["ApplicationName"], configuration["DeploymentGroupName"])
    assert (root / "var/www/html/index.html").read_text() == BUNDLE["index.html"]
