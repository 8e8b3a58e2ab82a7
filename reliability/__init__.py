"""pipebot's reliability suite: shared machinery for `make reliability`.

The checks themselves are pytest tests (``tests/test_reliability*.py``, ``tests/test_security*.py``,
``tests/test_fuzz*.py``, marked ``reliability``); this package holds what they share: real
``pipebot serve`` processes that can be killed with SIGKILL and restarted
(``reliability.harness``), a fake Slack that injects faults (``reliability.faults``), and the
figures each check records and ``python -m reliability.report`` prints (``reliability.figures``).
"""
