"""Errors raised by the embedded engine, shaped exactly like boto3's.

Callers of a real ``boto3.client("codepipeline")`` catch
``botocore.exceptions.ClientError`` and read ``e.response["Error"]["Code"]``;
the embedded engine raises the same exception so one code path serves both.
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


class DeclarationError(Exception):
    """A pipeline declaration that the engine refuses.

    Carries the AWS error code so the API layer can turn it into a ClientError
    for whichever operation (CreatePipeline, UpdatePipeline) was called.
    """

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message

    def to_client_error(self, *, operation: str) -> ClientError:
        return client_error(self.code, self.message, operation=operation)
