"""Errors of the embedded engine: its own, and the ones it raises shaped exactly like boto3's.

Inside the engine every error is an ``EngineError``. At the API boundary,
``LocalCodePipeline`` raises what a real ``boto3.client("codepipeline")``
raises: ``botocore.exceptions.ClientError`` with AWS's code in
``e.response["Error"]["Code"]``, so one code path serves both backends. A
``RefusedError`` (a declaration or a request the engine's rules refuse) carries
that code and becomes the ClientError of whichever operation was called.
"""

from __future__ import annotations

import functools
import uuid
from typing import cast

import botocore.session
from botocore.errorfactory import BaseClientExceptions, ClientExceptionsFactory
from botocore.exceptions import ClientError


@functools.cache
def client_exceptions() -> BaseClientExceptions:
    """The same modeled exception classes as ``boto3.client("codepipeline").exceptions``.

    Raising these (all ``ClientError`` subclasses) lets callers write either
    ``except ClientError`` with a code check or ``except client.exceptions.X``.
    """
    model = botocore.session.get_session().get_service_model("codepipeline")
    return ClientExceptionsFactory().create_client_exceptions(model)


def client_error(code: str, message: str, *, operation: str) -> ClientError:
    """Build the ClientError boto3 would raise for ``code`` from ``operation``.

    ``operation`` is the API's operation name (``CreatePipeline``), as botocore
    puts it in the exception text.
    """
    response = {
        "Error": {"Code": code, "Message": message},
        "ResponseMetadata": {
            "RequestId": str(uuid.uuid4()),
            "HTTPStatusCode": 400,
            "HTTPHeaders": {},
            "RetryAttempts": 0,
        },
        "message": message,
    }
    # botocore-stubs type from_code's result as an instance; it is the class.
    error_class = cast(type[ClientError], client_exceptions().from_code(code))
    return error_class(response, operation)  # type: ignore[arg-type]


class EngineError(Exception):
    """The base of the engine's own errors.

    ``LocalCodePipeline``'s boto3 methods answer with ClientError, as boto3 does: they convert
    a ``RefusedError``, and any other EngineError escaping them is a bug. Engine functions the
    bot calls directly (``validate_declaration``) raise them as they are.
    """


class RefusedError(EngineError):
    """Something the engine refuses, with the AWS error code the API answers it with.

    The rules and the declaration checks do not know which operation asked; the API
    layer turns the refusal into a ClientError of that operation.
    """

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message

    def to_client_error(self, *, operation: str) -> ClientError:
        return client_error(self.code, self.message, operation=operation)


class DeclarationError(RefusedError):
    """A pipeline declaration that the engine refuses (CreatePipeline, UpdatePipeline)."""
