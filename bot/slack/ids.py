"""Every Slack action_id, callback_id and block_id pipebot uses, in one place.

Renderers (``bot/slack/``) put them on buttons and views; handlers
(``handlers/``) listen for them. Buttons carry identifiers only (see
``ButtonRef``), never an approval token: the token is read at click time.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass

# Buttons (block_actions)
START = "pipebot.start"
STOP = "pipebot.stop"  # opens the stop modal (wait or abandon, reason)
RETRY_FAILED = "pipebot.retry_failed"
RETRY_ALL = "pipebot.retry_all"
APPROVE = "pipebot.approve"  # carries a confirm dialog
REJECT = "pipebot.reject"  # opens the reject-comment modal
VIEW_LOG = "pipebot.view_log"
# The "View log…" menu: one static select for several actions' logs (an action_id must be unique
# within its block); handled as VIEW_LOG with the chosen option's ref.
VIEW_LOG_SELECT = "pipebot.view_log_select"
DELETE_CONFIRM = "pipebot.delete_confirm"
DELETE_CANCEL = "pipebot.delete_cancel"
REFRESH_STATUS = "pipebot.refresh_status"
ROLLBACK = "pipebot.rollback"  # carries a confirm naming the target (ref.execution)
ROLLBACK_CONFIRM = "pipebot.rollback_confirm"  # the `rollback` command's Confirm
ROLLBACK_CANCEL = "pipebot.rollback_cancel"  # the `rollback` command's Cancel
OVERRIDE = "pipebot.override"  # ref.action holds the conditionType (BEFORE_ENTRY, ON_SUCCESS)

BUTTON_ACTIONS = (
    START,
    STOP,
    RETRY_FAILED,
    RETRY_ALL,
    APPROVE,
    REJECT,
    VIEW_LOG,
    DELETE_CONFIRM,
    DELETE_CANCEL,
    REFRESH_STATUS,
    ROLLBACK,
    ROLLBACK_CONFIRM,
    ROLLBACK_CANCEL,
    OVERRIDE,
)
"""Every button above. The tests walk it: each button is refused without its permission
(``tests/test_security.py``), answers stale and foreign values (``tests/test_fuzz_inputs.py``),
and is the only kind a renderer draws (``tests/blockcheck.py``)."""

# Modals (view_submission callback_id)
CREATE_VIEW = "pipebot.create"
EDIT_VIEW = "pipebot.edit"
REJECT_VIEW = "pipebot.reject_comment"
STOP_VIEW = "pipebot.stop_options"

# Input blocks and elements inside the modals
DECLARATION_BLOCK = "declaration"
DECLARATION_INPUT = "declaration_input"
COMMENT_BLOCK = "comment"
COMMENT_INPUT = "comment_input"
STOP_MODE_BLOCK = "stop_mode"
STOP_MODE_INPUT = "stop_mode_input"
STOP_REASON_BLOCK = "stop_reason"
STOP_REASON_INPUT = "stop_reason_input"


@dataclass(frozen=True)
class ButtonRef:
    """What a button or modal remembers: which pipeline, execution, stage and action.

    Serialised compactly into a button's ``value`` or a view's ``private_metadata``
    (with the channel and message of the click, so the outcome can be shown there).
    """

    pipeline: str
    execution: str | None = None
    stage: str | None = None
    action: str | None = None
    channel: str | None = None
    message_ts: str | None = None

    def encode(self) -> str:
        return json.dumps(
            {k: v for k, v in asdict(self).items() if v is not None}, separators=(",", ":")
        )

    @classmethod
    def decode(cls, value: str) -> ButtonRef:
        """Parse a value this module encoded; ValueError for anything else."""
        try:
            data = json.loads(value)
        except (TypeError, json.JSONDecodeError) as exc:
            raise ValueError("not a pipebot button value") from exc
        if not isinstance(data, dict) or not isinstance(data.get("pipeline"), str):
            raise ValueError("not a pipebot button value")
        fields = {"pipeline", "execution", "stage", "action", "channel", "message_ts"}
        if set(data) - fields or not all(isinstance(v, str) for v in data.values()):
            raise ValueError("not a pipebot button value")
        return cls(**data)
