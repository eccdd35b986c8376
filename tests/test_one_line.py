"""core.requests.one_line: the one way an exception becomes a line, for the CLI and for plugin reports."""

from __future__ import annotations

from ganvas.core.errors import GanvasError, one_line


def test_a_message_for_users_stands_alone_on_one_line():
    assert one_line(GanvasError("unknown model 'x':\n  not a registered name")) == (
        "unknown model 'x': not a registered name"
    )
    assert one_line(FileNotFoundError(2, "No such file or directory", "a.png")) == (
        "[Errno 2] No such file or directory: 'a.png'"
    )


def test_the_type_is_added_where_the_message_says_too_little():
    assert one_line(KeyError("resolution")) == "KeyError: 'resolution'"
    assert one_line(OSError("disk full")) == "OSError: disk full"
    assert one_line(RuntimeError()) == "RuntimeError"


def test_plugin_failures_always_name_the_type():
    assert one_line(ImportError("no module named  x"), with_type=True) == "ImportError: no module named x"
    assert one_line(RuntimeError(), with_type=True) == "RuntimeError: (no message)"
    assert one_line(GanvasError("a\nb"), with_type=True) == "GanvasError: a b"
