"""Who may do what: the permission policy, as pure rules over injected lookups.

The rules, in order:

1. ``read`` is always allowed.
2. No-self-approval: if the pipeline's policy is on, whoever started an execution may not
   approve or reject it. This holds for admins and in trial mode too: the switch is an
   explicit four-eyes rule, and a rule that its own setter could bypass would protect nothing.
3. Trial mode (no admins configured): everything else is allowed.
4. Admins may do everything else.
5. ``admin`` is for admins only.
6. ``operate``: the pipeline's operators. ``approve``: its approvers, or its operators when it
   has no approvers list. A pipeline with neither list (or no pipeline): admins only.

List entries are Slack user IDs (``U…``/``W…``) or user group IDs (``S…``). Group members come
from ``group_members`` (usergroups.users.list in the bot), cached per group. A lookup that
fails denies (fail closed) unless another entry already grants, and is not cached.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from enum import StrEnum
from typing import Final, Literal

from storage import bot_store
from storage.db import SessionFactory

logger = logging.getLogger(__name__)


class Permission(StrEnum):
    """The right an operation needs; ``Permissions.check`` maps it to admins, operators and
    approvers."""

    READ = "read"
    OPERATE = "operate"
    APPROVE = "approve"
    ADMIN = "admin"


PERMISSION_HOLDERS: Final[dict[Permission, str]] = {
    Permission.READ: "everyone",
    Permission.OPERATE: "the pipeline's operators and admins",
    Permission.APPROVE: "the pipeline's approvers and admins",
    Permission.ADMIN: "admins (`PIPEBOT_ADMINS`)",
}
"""Who holds each permission, as help says it."""

_ROLE_NOUN: Final = {"operators": "operator", "approvers": "approver"}


def is_group(subject: str) -> bool:
    """True for a Slack user group ID (``S…``), False for a user ID (``U…``/``W…``)."""
    return subject.startswith("S")


def mention(subject: str) -> str:
    """Slack markup that renders ``subject`` (a user or a user group) as a mention."""
    return f"<!subteam^{subject}>" if is_group(subject) else f"<@{subject}>"


def mentions(subjects: Iterable[str]) -> str:
    rendered = [mention(subject) for subject in subjects]
    return ", ".join(rendered) if rendered else "nobody"


@dataclass(frozen=True)
class Decision:
    """Whether an action is allowed; ``reason`` is written for the user who asked."""

    allowed: bool
    reason: str

    def __bool__(self) -> bool:
        return self.allowed


@dataclass(frozen=True)
class PipelineAccessLists:
    """A pipeline's lists and policy, as ``access NAME`` shows them."""

    pipeline: str
    operators: tuple[str, ...]
    approvers: tuple[str, ...]
    no_self_approval: bool

    @property
    def approving_role(self) -> Literal["operators", "approvers"]:
        """The list whose members approve: approvers, or operators when there are none."""
        return "approvers" if self.approvers else "operators"


class Permissions:
    """Answers "may this user do this?" from the admins, the stored lists and group members."""

    def __init__(
        self,
        *,
        admins: frozenset[str],
        sessions: SessionFactory,
        group_members: Callable[[str], frozenset[str]],
        cache_seconds: float = 60.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.admins = admins
        self._sessions = sessions
        self._group_members = group_members
        self._cache_seconds = cache_seconds
        self._clock = clock
        self._cache: dict[str, tuple[float, frozenset[str]]] = {}
        self._cache_lock = threading.Lock()

    @property
    def trial_mode(self) -> bool:
        """No admins configured: everyone may do everything (bar no-self-approval)."""
        return not self.admins

    def access_lists(self, pipeline: str) -> PipelineAccessLists:
        with self._sessions() as session:
            rows = bot_store.list_access(session=session, pipeline=pipeline)
            policy = bot_store.get_policy(session=session, pipeline=pipeline)
        return PipelineAccessLists(
            pipeline=pipeline,
            operators=tuple(row.subject for row in rows if row.role == "operators"),
            approvers=tuple(row.subject for row in rows if row.role == "approvers"),
            no_self_approval=bool(policy and policy.no_self_approval),
        )

    def check(
        self,
        *,
        user_id: str,
        permission: Permission,
        pipeline: str | None,
        execution_starter: str | None = None,
    ) -> Decision:
        """Decide; ``execution_starter`` is who started the execution being approved, if known."""
        if permission == Permission.READ:
            return Decision(True, "Everyone may read.")
        # The lists are read only when a rule needs them: admins and trial mode stay off the
        # database unless a starter approves their own execution.
        lists: PipelineAccessLists | None = None
        if (
            permission == Permission.APPROVE
            and pipeline is not None
            and execution_starter == user_id
        ):
            lists = self.access_lists(pipeline)
            if lists.no_self_approval:
                return Decision(
                    False,
                    f"{pipeline} does not allow self-approval: you started this execution, so "
                    "someone else must approve or reject it. This applies to admins too.",
                )
        if self.trial_mode:
            return Decision(True, "Trial mode: no admins are configured, so everyone may act.")
        if user_id in self.admins:
            return Decision(True, "You are an admin.")
        admins = f"Admins: {mentions(sorted(self.admins))}."
        if permission == Permission.ADMIN:
            return Decision(False, f"You need to be a pipebot admin. {admins}")
        if permission not in (Permission.OPERATE, Permission.APPROVE):
            raise ValueError(f"unknown permission: {permission!r}")

        verb = "operate" if permission == Permission.OPERATE else "approve or reject executions of"
        if pipeline is None:
            return Decision(False, f"Only admins may {verb} that. {admins}")
        if lists is None:
            lists = self.access_lists(pipeline)
        role: Literal["operators", "approvers"] = (
            "operators" if permission == Permission.OPERATE else lists.approving_role
        )
        subjects = lists.operators if role == "operators" else lists.approvers
        if not subjects:
            missing = (
                "operators list"
                if permission == Permission.OPERATE
                else "approvers or operators list"
            )
            return Decision(
                False, f"Only admins may {verb} {lists.pipeline}: it has no {missing}. {admins}"
            )
        granted, unchecked = self._is_listed(user_id, subjects)
        if granted:
            return Decision(True, f"You are an {_ROLE_NOUN[role]} of {lists.pipeline}.")

        noun = _ROLE_NOUN[role]
        article = "an" if noun[0] in "aeiou" else "a"
        need = f"You need to be {article} {noun} of {lists.pipeline}"
        if permission == Permission.APPROVE and role == "operators":
            need += " (it has no approvers list, so its operators approve)"
        holders = f"{role.capitalize()}: {mentions(subjects)}."
        if unchecked:
            return Decision(
                False,
                f"{need}, and membership of {mentions(unchecked)} couldn't be checked with "
                f"Slack just now; try again in a moment. {holders} {admins}",
            )
        return Decision(False, f"{need}. {holders} {admins}")

    def approvers(self, pipeline: str, *, execution_starter: str | None = None) -> tuple[str, ...]:
        """Who may answer an approval of ``pipeline`` (user and group IDs, to name and mention),
        by the rules of ``check``: the approvers list, else the operators list, less
        ``execution_starter`` when the pipeline does not allow self-approval (rule 2). With
        admins configured and nobody left (no list, or only the starter on it), the admins,
        who may approve anything but their own execution under that rule. Empty when nobody
        in particular is meant: trial mode without lists (everyone may), or nobody at all
        may (the only admin started it and self-approval is off).

        A user group is named as it is: it cannot be narrowed to the members other than the
        starter, and ``check`` still refuses the starter if they click."""
        lists = self.access_lists(pipeline)
        listed = lists.approvers if lists.approving_role == "approvers" else lists.operators
        excluded = execution_starter if lists.no_self_approval else None
        chosen = tuple(subject for subject in listed if subject != excluded)
        if chosen or self.trial_mode:
            return chosen
        return tuple(admin for admin in sorted(self.admins) if admin != excluded)

    def _is_listed(self, user_id: str, subjects: Iterable[str]) -> tuple[bool, list[str]]:
        """(listed directly or through a group, groups whose lookup failed)."""
        subjects = list(subjects)
        if user_id in subjects:
            return True, []
        unchecked: list[str] = []
        for group in (subject for subject in subjects if is_group(subject)):
            try:
                members = self._members(group)
            except Exception:
                # Fail closed, but log it: a deny the user can't explain must be traceable.
                logger.warning("could not list members of user group %s", group, exc_info=True)
                unchecked.append(group)
                continue
            if user_id in members:
                return True, []
        return False, unchecked

    def _members(self, group: str) -> frozenset[str]:
        now = self._clock()
        with self._cache_lock:
            cached = self._cache.get(group)
        if cached is not None and cached[0] > now:
            return cached[1]
        # The lookup runs outside the lock: a slow Slack call must not hold up other checks.
        members = frozenset(self._group_members(group))
        with self._cache_lock:
            self._cache[group] = (now + self._cache_seconds, members)
        return members
