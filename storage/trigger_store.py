"""Storage functions for trigger change detection: the git refs the source poller has seen.

One ``SourceRefSeen`` row per (pipeline, source action, ref) holds the commit the ref pointed
at when the poller last looked; a ref whose commit differs (or that has no row) was pushed
since. Keyword-only functions that take a session; the caller owns the transaction. Rows go
with their pipeline (``ON DELETE CASCADE``).

The row whose ``ref`` is ``BASELINE_REF`` (never a git ref name: those start with ``refs/``)
marks that the action's refs were read once; its ``revision`` says which repository they were
read from, so a trigger moved to another repository is read afresh.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import datetime

from sqlmodel import Session, col, delete, select

from storage.common import dialect_insert
from storage.models import SourceRefSeen

#: The ref name of the row that marks an action's refs as read once (see the module docstring).
BASELINE_REF = "(baseline)"


def seen_refs(*, session: Session, pipeline_id: int, action_name: str) -> dict[str, str]:
    """Every ref seen for one source action, as ``{ref: revision}`` (the baseline row included,
    under ``BASELINE_REF``); ``{}`` if the action's refs were never read."""
    statement = select(SourceRefSeen.ref, SourceRefSeen.revision).where(
        SourceRefSeen.pipeline_id == pipeline_id, SourceRefSeen.action_name == action_name
    )
    return {ref: revision for ref, revision in session.exec(statement)}


def watched_actions(*, session: Session, pipeline_id: int) -> set[str]:
    """The source actions of a pipeline that have rows (whose trigger's refs were read)."""
    statement = (
        select(SourceRefSeen.action_name).where(SourceRefSeen.pipeline_id == pipeline_id).distinct()
    )
    return set(session.exec(statement))


def record_refs(
    *,
    session: Session,
    pipeline_id: int,
    action_name: str,
    refs: Mapping[str, str],
    now: datetime,
) -> None:
    """Insert or update one row per ``{ref: revision}`` of ``refs`` (one statement per ref)."""
    for ref, revision in refs.items():
        statement = (
            dialect_insert(session, SourceRefSeen)
            .values(
                pipeline_id=pipeline_id,
                action_name=action_name,
                ref=ref,
                revision=revision,
                seen_at=now,
            )
            .on_conflict_do_update(
                index_elements=["pipeline_id", "action_name", "ref"],
                set_={"revision": revision, "seen_at": now},
            )
        )
        session.execute(statement)


def forget_refs(
    *, session: Session, pipeline_id: int, action_name: str, refs: Iterable[str]
) -> None:
    """Delete the rows of ``refs`` (deleted branches and tags) for one source action."""
    names = sorted(set(refs))
    if not names:
        return
    session.execute(
        delete(SourceRefSeen).where(
            col(SourceRefSeen.pipeline_id) == pipeline_id,
            col(SourceRefSeen.action_name) == action_name,
            col(SourceRefSeen.ref).in_(names),
        )
    )


def forget_actions(*, session: Session, pipeline_id: int, keep: Iterable[str]) -> None:
    """Delete the rows of every source action of the pipeline but ``keep`` (actions whose
    trigger was removed, or renamed): a trigger added again is read afresh."""
    statement = delete(SourceRefSeen).where(col(SourceRefSeen.pipeline_id) == pipeline_id)
    kept = sorted(set(keep))
    if kept:
        statement = statement.where(col(SourceRefSeen.action_name).not_in(kept))
    session.execute(statement)


def replace_refs(
    *,
    session: Session,
    pipeline_id: int,
    action_name: str,
    refs: Mapping[str, str],
    now: datetime,
) -> None:
    """Make ``refs`` the whole set of rows of one source action (a baseline)."""
    session.execute(
        delete(SourceRefSeen).where(
            col(SourceRefSeen.pipeline_id) == pipeline_id,
            col(SourceRefSeen.action_name) == action_name,
        )
    )
    session.add_all(
        SourceRefSeen(
            pipeline_id=pipeline_id,
            action_name=action_name,
            ref=ref,
            revision=revision,
            seen_at=now,
        )
        for ref, revision in refs.items()
    )
    session.flush()


__all__ = [
    "BASELINE_REF",
    "forget_actions",
    "forget_refs",
    "record_refs",
    "replace_refs",
    "seen_refs",
    "watched_actions",
]
