"""webapp.guards: argument parsing (every bad value is a 422 naming the parameter) and the error family."""

from __future__ import annotations

import pytest

from retrieval.errors import InvalidInput, NotFound, VTRError
from webapp.errors import AdminDisabled, Forbidden, RateLimited, Unauthorized
from webapp.guards import parse_bool, parse_float, parse_int, parse_text


def test_parse_int():
    assert parse_int("k", None, 20, 1, 100) == 20 and parse_int("k", " 7 ", 20, 1, 100) == 7
    assert parse_int("k", 5.0, 20, 1, 100) == 5
    for bad in ("x", True, "1e3", 0, 101):
        with pytest.raises(InvalidInput, match="k"):
            parse_int("k", bad, 20, 1, 100)


def test_parse_float_bool_text():
    assert parse_float("d", "2.5") == 2.5 and parse_float("d", "") is None
    with pytest.raises(InvalidInput):
        parse_float("d", "nan")
    assert parse_bool("b", "Yes", None) is True and parse_bool("b", 0, None) is False
    with pytest.raises(InvalidInput):
        parse_bool("b", "maybe", None)
    assert parse_text("q", "  hi ", required=True, max_chars=5) == "hi"
    for bad in ("", "x" * 6, "a\x00b", "\ud800"):
        with pytest.raises(InvalidInput):
            parse_text("q", bad, required=True, max_chars=5)


def test_one_error_family_with_status_code_and_headers():
    exc = RateLimited("slow down", headers={"Retry-After": "3"})
    assert (exc.status, exc.code, exc.headers) == (429, "rate_limited", {"Retry-After": "3"})
    assert (Forbidden("no").status, Forbidden("no").code) == (403, "forbidden")
    assert issubclass(AdminDisabled, Forbidden) and AdminDisabled("x").code == "admin_disabled"
    assert Unauthorized("x").status == 401 and NotFound("x").headers == {}
    assert all(issubclass(c, VTRError) for c in (RateLimited, Forbidden, Unauthorized))
