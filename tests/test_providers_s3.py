"""The Source/AWS/S3 and Deploy/AWS/S3 actions on local buckets (bot.engine.providers.s3).

Unit tests drive the module on directories, one rule of the contract each
(../shared/docs/local-providers.md, "S3"); scenario tests run an S3 source zip -> S3 deploy
(extracted, and zipped) through LocalCodePipeline on SQLite and PostgreSQL, every response checked
against botocore's output shapes.
"""

from __future__ import annotations

import hashlib
import io
import os
import zipfile
from pathlib import Path
from typing import Any

import pytest
from botocore.exceptions import ClientError

from bot.engine.providers import s3
from bot.engine.providers.s3 import S3Error
from tests.helpers import commands_action, pipeline, wait_for
from tests.shapecheck import assert_output_shape


def zip_bytes(files: dict[str, str], *, modes: dict[str, int] | None = None) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for name, content in files.items():
            info = zipfile.ZipInfo(name)
            info.external_attr = ((modes or {}).get(name, 0o644) | 0o100000) << 16
            archive.writestr(info, content)
    return buffer.getvalue()


def put(data: Path, bucket: str, key: str, body: bytes) -> Path:
    path = data / "s3" / bucket / key
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(body)
    return path


# --------------------------------------------------------------------------- names


@pytest.mark.parametrize("bucket", ["ab", "Upper", "-start", "end-", "a..b", "192.168.0.1", "a/b"])
def test_invalid_bucket_names_are_refused(tmp_path: Path, bucket: str) -> None:
    with pytest.raises(S3Error, match="not a valid bucket name"):
        s3.bucket_dir(data_dir=tmp_path, bucket=bucket)
    assert s3.source_configuration_problem({"S3Bucket": bucket, "S3ObjectKey": "k.zip"})


@pytest.mark.parametrize("key", ["../escape.zip", "/abs.zip", "a/../../b", "a//b", "./a", ""])
def test_keys_that_cannot_be_local_paths_are_refused(tmp_path: Path, key: str) -> None:
    with pytest.raises(S3Error):
        s3.object_path(data_dir=tmp_path, bucket="sources", key=key)
    assert s3.s3_revision(tmp_path, "sources", key) is None


def test_object_paths_live_under_the_bucket(tmp_path: Path) -> None:
    path = s3.object_path(data_dir=tmp_path, bucket="my.bucket-1", key="apps/web/app.zip")
    assert path == tmp_path / "s3" / "my.bucket-1" / "apps" / "web" / "app.zip"


@pytest.mark.parametrize(
    ("configuration", "problem"),
    [
        ({"BucketName": "site", "Extract": "maybe"}, 'Extract must be "true" or "false"'),
        ({"BucketName": "site", "Extract": "false"}, "ObjectKey is required"),
        ({"BucketName": "site", "Extract": "false", "ObjectKey": "../x.zip"}, "ObjectKey"),
        ({"BucketName": "Bad_Bucket", "Extract": "true"}, "BucketName 'Bad_Bucket'"),
        ({"BucketName": "site", "Extract": "true"}, None),
        ({"BucketName": "site", "Extract": "TRUE", "ObjectKey": "live/"}, None),
        ({"BucketName": "site", "Extract": "false", "ObjectKey": "#{V.key}"}, None),
        ({"BucketName": "#{V.bucket}", "Extract": "#{V.extract}"}, None),
    ],
)
def test_deploy_configuration_problems(configuration: dict[str, str], problem: str | None) -> None:
    found = s3.deploy_configuration_problem(configuration)
    if problem is None:
        assert found is None
    else:
        assert found is not None and problem in found


# --------------------------------------------------------------------------- source


def test_the_revision_is_the_objects_md5_etag_and_changes_with_it(tmp_path: Path) -> None:
    assert s3.s3_revision(tmp_path, "sources", "app.zip") is None
    first = zip_bytes({"a.txt": "1"})
    put(tmp_path, "sources", "app.zip", first)
    revision = s3.s3_revision(tmp_path, "sources", "app.zip")
    assert revision == hashlib.md5(first).hexdigest()
    assert len(revision) == 32
    put(tmp_path, "sources", "app.zip", first)  # the same bytes again: the same revision
    assert s3.s3_revision(tmp_path, "sources", "app.zip") == revision
    put(tmp_path, "sources", "app.zip", zip_bytes({"a.txt": "2"}))
    assert s3.s3_revision(tmp_path, "sources", "app.zip") not in (None, revision)


def test_fetch_source_unzips_the_object_keeping_modes(tmp_path: Path) -> None:
    body = zip_bytes(
        {"appspec.yml": "version: 0.0\n", "scripts/start.sh": "#!/bin/sh\n", "dir/": ""},
        modes={"scripts/start.sh": 0o755},
    )
    put(tmp_path, "sources", "app.zip", body)
    destination = tmp_path / "artifact"
    fetched = s3.fetch_source(
        data_dir=tmp_path, bucket="sources", key="app.zip", destination=destination
    )
    assert fetched.etag == hashlib.md5(body).hexdigest()
    assert fetched.size == len(body)
    assert fetched.summary == f"app.zip (ETag {fetched.etag})"
    assert (destination / "appspec.yml").read_text() == "version: 0.0\n"
    assert (destination / "scripts" / "start.sh").stat().st_mode & 0o777 == 0o755


def test_fetch_source_refuses_a_missing_object_and_a_non_zip(tmp_path: Path) -> None:
    with pytest.raises(S3Error, match="does not exist"):
        s3.fetch_source(
            data_dir=tmp_path, bucket="sources", key="app.zip", destination=tmp_path / "a"
        )
    put(tmp_path, "sources", "app.zip", b"plain text")
    with pytest.raises(S3Error, match="is not a zip file"):
        s3.fetch_source(
            data_dir=tmp_path, bucket="sources", key="app.zip", destination=tmp_path / "a"
        )


@pytest.mark.parametrize("member", ["../evil.txt", "/etc/evil.txt", "a/../../evil.txt"])
def test_fetch_source_refuses_members_leaving_the_artifact(tmp_path: Path, member: str) -> None:
    put(tmp_path, "sources", "app.zip", zip_bytes({member: "x", "ok.txt": "y"}))
    destination = tmp_path / "work" / "artifact"
    with pytest.raises(S3Error, match="outside the artifact"):
        s3.fetch_source(data_dir=tmp_path, bucket="sources", key="app.zip", destination=destination)
    assert not (tmp_path / "work" / "evil.txt").exists()
    assert not (tmp_path / "evil.txt").exists()


# --------------------------------------------------------------------------- deploy


def make_artifact(path: Path, files: dict[str, str]) -> Path:
    for name, content in files.items():
        target = path / name
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(content)
    path.mkdir(parents=True, exist_ok=True)
    return path


def test_extract_true_writes_each_file_under_the_object_key_prefix(tmp_path: Path) -> None:
    artifact = make_artifact(tmp_path / "art", {"index.html": "v1", "css/site.css": "body{}"})
    other = put(tmp_path, "website", "live/old.html", b"stays")
    result = s3.deploy(
        data_dir=tmp_path, bucket="website", artifact=artifact, extract=True, object_key="live/"
    )
    bucket = tmp_path / "s3" / "website"
    assert (bucket / "live" / "index.html").read_text() == "v1"
    assert (bucket / "live" / "css" / "site.css").read_text() == "body{}"
    assert other.read_bytes() == b"stays"  # S3 deploy never deletes other objects
    assert result.keys == ("live/css/site.css", "live/index.html")
    assert result.summary == "Extracted 2 files into s3://website/live/"


def test_extract_true_without_object_key_writes_at_the_bucket_root(tmp_path: Path) -> None:
    artifact = make_artifact(tmp_path / "art", {"index.html": "v1"})
    s3.deploy(data_dir=tmp_path, bucket="website", artifact=artifact, extract=True, object_key=None)
    assert (tmp_path / "s3" / "website" / "index.html").read_text() == "v1"


def test_extract_false_stores_the_artifact_zipped_as_the_object(tmp_path: Path) -> None:
    artifact = make_artifact(tmp_path / "art", {"index.html": "v1", "css/site.css": "body{}"})
    result = s3.deploy(
        data_dir=tmp_path,
        bucket="archive",
        artifact=artifact,
        extract=False,
        object_key="builds/site.zip",
    )
    stored = tmp_path / "s3" / "archive" / "builds" / "site.zip"
    with zipfile.ZipFile(stored) as archive:
        assert sorted(archive.namelist()) == ["css/site.css", "index.html"]
        assert archive.read("index.html") == b"v1"
    etag = s3.s3_revision(tmp_path, "archive", "builds/site.zip")
    assert (
        result.summary
        == f"Uploaded the artifact zipped as s3://archive/builds/site.zip (ETag {etag})"
    )
    with pytest.raises(S3Error, match="ObjectKey is required"):
        s3.deploy(
            data_dir=tmp_path, bucket="archive", artifact=artifact, extract=False, object_key=None
        )


def test_deploy_never_follows_links_out_of_the_artifact_or_bucket(tmp_path: Path) -> None:
    secret = tmp_path / "secret.txt"
    secret.write_text("host secret")
    outside = tmp_path / "outside"
    outside.mkdir()
    artifact = make_artifact(tmp_path / "art", {"index.html": "v1"})
    os.symlink(secret, artifact / "leak.txt")
    result = s3.deploy(
        data_dir=tmp_path, bucket="website", artifact=artifact, extract=True, object_key=None
    )
    assert not (tmp_path / "s3" / "website" / "leak.txt").exists()
    assert "leak.txt" in result.summary and result.skipped == ("leak.txt",)
    # A prefix directory in the bucket that is a link leading elsewhere is never written through.
    os.symlink(outside, tmp_path / "s3" / "website" / "live")
    with pytest.raises(S3Error):
        s3.deploy(
            data_dir=tmp_path, bucket="website", artifact=artifact, extract=True, object_key="live"
        )
    assert list(outside.iterdir()) == []


# --------------------------------------------------------------------------- through the engine

NAME = "s3-pipeline"


def s3_source(**configuration: str) -> dict[str, Any]:
    return {
        "name": "Source",
        "actionTypeId": {"category": "Source", "owner": "AWS", "provider": "S3", "version": "1"},
        "configuration": {"S3Bucket": "sources", "S3ObjectKey": "site/app.zip", **configuration},
        "outputArtifacts": [{"name": "SourceArtifact"}],
        "namespace": "SourceVariables",
    }


def s3_deploy(name: str, run_order: int = 1, **configuration: str) -> dict[str, Any]:
    return {
        "name": name,
        "actionTypeId": {"category": "Deploy", "owner": "AWS", "provider": "S3", "version": "1"},
        "runOrder": run_order,
        "configuration": configuration,
        "inputArtifacts": [{"name": "SourceArtifact"}],
    }


def s3_pipeline(tmp_path: Path) -> dict[str, Any]:
    seen = tmp_path / "seen-etag"
    return pipeline(
        NAME,
        [
            ("Source", [s3_source()]),
            (
                "Deploy",
                [
                    s3_deploy(
                        "Website",
                        BucketName="website",
                        Extract="true",
                        ObjectKey="live",
                        CacheControl="max-age=60",
                        CannedACL="public-read",
                    ),
                    s3_deploy(
                        "Archive", BucketName="archive", Extract="false", ObjectKey="site.zip"
                    ),
                    commands_action(
                        "Check",
                        [
                            "echo '#{SourceVariables.ETag} #{SourceVariables.VersionId}' "
                            f"> {seen}"
                        ],
                        run_order=2,
                    ),
                ],
            ),
        ],
    )


def wait_status(engine: Any, execution_id: str, status: str) -> dict[str, Any]:
    def done() -> dict[str, Any] | None:
        response = engine.get_pipeline_execution(
            pipelineName=NAME, pipelineExecutionId=execution_id
        )
        assert_output_shape("GetPipelineExecution", response)
        execution = response["pipelineExecution"]
        return execution if execution["status"] == status else None

    return wait_for(done, timeout=60, what=f"execution {execution_id} {status}")


def actions(engine: Any, execution_id: str) -> dict[str, dict[str, Any]]:
    response = engine.list_action_executions(
        pipelineName=NAME, filter={"pipelineExecutionId": execution_id}
    )
    assert_output_shape("ListActionExecutions", response)
    return {a["actionName"]: a for a in response["actionExecutionDetails"]}


def test_an_s3_source_zip_deploys_to_local_buckets_through_the_engine(
    engine: Any, tmp_path: Path
) -> None:
    data = tmp_path / "data"
    body = zip_bytes({"index.html": "<h1>v1</h1>", "css/site.css": "body{}"})
    put(data, "sources", "site/app.zip", body)
    etag = hashlib.md5(body).hexdigest()
    response = engine.create_pipeline(pipeline=s3_pipeline(tmp_path))
    assert_output_shape("CreatePipeline", response)
    first = engine.list_pipeline_executions(pipelineName=NAME)["pipelineExecutionSummaries"][0]
    execution = wait_status(engine, first["pipelineExecutionId"], "Succeeded")

    assert execution["artifactRevisions"][0]["revisionId"] == etag
    assert (data / "s3" / "website" / "live" / "index.html").read_text() == "<h1>v1</h1>"
    assert (data / "s3" / "website" / "live" / "css" / "site.css").read_text() == "body{}"
    with zipfile.ZipFile(data / "s3" / "archive" / "site.zip") as archive:
        assert sorted(archive.namelist()) == ["css/site.css", "index.html"]
    assert (tmp_path / "seen-etag").read_text().split() == [etag, etag]
    ran = actions(engine, first["pipelineExecutionId"])
    source = ran["Source"]
    assert source["output"]["executionResult"]["externalExecutionId"] == etag
    assert source["output"]["outputVariables"] == {"ETag": etag, "VersionId": etag}
    assert ran["Website"]["output"]["executionResult"]["externalExecutionSummary"] == (
        "Extracted 2 files into s3://website/live/"
    )
    state = engine.get_pipeline_state(name=NAME)
    assert_output_shape("GetPipelineState", state)
    assert state["stageStates"][0]["actionStates"][0]["currentRevision"]["revisionId"] == etag

    # A new object: the next execution reads it, with its own revision.
    body2 = zip_bytes({"index.html": "<h1>v2</h1>"})
    put(data, "sources", "site/app.zip", body2)
    assert s3.s3_revision(data, "sources", "site/app.zip") == hashlib.md5(body2).hexdigest()
    started = engine.start_pipeline_execution(name=NAME)
    second = wait_status(engine, started["pipelineExecutionId"], "Succeeded")
    assert second["artifactRevisions"][0]["revisionId"] == hashlib.md5(body2).hexdigest()
    assert (data / "s3" / "website" / "live" / "index.html").read_text() == "<h1>v2</h1>"


def test_a_missing_source_object_fails_the_source_action(engine: Any, tmp_path: Path) -> None:
    engine.create_pipeline(pipeline=s3_pipeline(tmp_path))
    first = engine.list_pipeline_executions(pipelineName=NAME)["pipelineExecutionSummaries"][0]
    wait_status(engine, first["pipelineExecutionId"], "Failed")
    source = actions(engine, first["pipelineExecutionId"])["Source"]
    assert source["status"] == "Failed"
    assert (
        "s3://sources/site/app.zip does not exist"
        in (source["output"]["executionResult"]["externalExecutionSummary"])
    )


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"Extract": "false"}, 'ObjectKey is required when Extract is "false"'),
        ({"Extract": "yes"}, 'Extract must be "true" or "false"'),
        ({"Website": "1"}, "'Website'"),  # a key the S3 deploy action does not have
    ],
)
def test_create_pipeline_refuses_bad_s3_deploy_configuration(
    engine: Any, tmp_path: Path, change: dict[str, str], message: str
) -> None:
    declaration = s3_pipeline(tmp_path)
    configuration = declaration["stages"][1]["actions"][0]["configuration"]
    configuration.pop("ObjectKey")
    configuration.update(change)
    with pytest.raises(ClientError) as caught:
        engine.create_pipeline(pipeline=declaration)
    error = caught.value.response["Error"]
    assert error["Code"] == "InvalidActionDeclarationException", error
    assert message in error["Message"]


def test_create_pipeline_refuses_an_s3_source_key_leaving_the_bucket(
    engine: Any, tmp_path: Path
) -> None:
    declaration = s3_pipeline(tmp_path)
    declaration["stages"][0]["actions"][0]["configuration"]["S3ObjectKey"] = "../../etc/app.zip"
    with pytest.raises(ClientError) as caught:
        engine.create_pipeline(pipeline=declaration)
    assert caught.value.response["Error"]["Code"] == "InvalidActionDeclarationException"
    assert "S3ObjectKey" in caught.value.response["Error"]["Message"]


@pytest.mark.parametrize("poll", ["true", "false"])
def test_the_source_poller_starts_an_execution_when_the_object_changes(
    engine: Any, tmp_path: Path, repos_dir: Path, poll: str
) -> None:
    from bot.engine.source_poller import SourcePoller

    data = tmp_path / "data"
    put(data, "sources", "site/app.zip", zip_bytes({"index.html": "v1"}))
    declaration = s3_pipeline(tmp_path)
    declaration["stages"][0]["actions"][0]["configuration"]["PollForSourceChanges"] = poll
    engine.create_pipeline(pipeline=declaration)
    first = engine.list_pipeline_executions(pipelineName=NAME)["pipelineExecutionSummaries"][0]
    wait_status(engine, first["pipelineExecutionId"], "Succeeded")
    poller = SourcePoller(client=engine, repositories_dir=repos_dir)
    assert poller.poll_once() == []  # the object the first execution read: nothing new

    body = zip_bytes({"index.html": "v2"})
    put(data, "sources", "site/app.zip", body)
    started = poller.poll_once()
    if poll == "false":
        assert started == []  # PollForSourceChanges "false": a change never starts it
        return
    assert len(started) == 1
    execution = wait_status(engine, started[0], "Succeeded")
    assert execution["trigger"]["triggerType"] == "PollForSourceChanges"
    assert execution["artifactRevisions"][0]["revisionId"] == hashlib.md5(body).hexdigest()
    assert poller.poll_once() == []  # seen now
