"""The one check of a recording's channel roles (pipeline.call.roles_problem), shared by uploads, scoring,
`huifang transcribe` and `huifang score-archive`."""

from __future__ import annotations

import pytest

from pipeline.call import roles_problem, split_roles


def test_roles_are_read_from_a_comma_separated_list() -> None:
    assert split_roles(" agent , customer ,") == ("agent", "customer")
    assert split_roles("") == ()


@pytest.mark.parametrize("roles", [("agent", "customer"), ("customer", "agent"), ("agent",), ("customer",)])
def test_known_roles_each_once_are_fine(roles: tuple[str, ...]) -> None:
    assert roles_problem(roles) is None


@pytest.mark.parametrize("roles", [(), ("agent", "agent"), ("agent", "ch2"), ("agent", "")])
def test_unknown_repeated_or_missing_roles_are_refused(roles: tuple[str, ...]) -> None:
    problem = roles_problem(roles)
    assert problem is not None and "agent and customer, each once" in problem


def test_a_whole_call_in_one_file_needs_both_sides() -> None:
    assert roles_problem(("agent", "customer"), both=True) is None
    problem = roles_problem(("agent",), both=True)
    assert problem == "must name agent and customer, each once, in the order of the files' channels (got agent)"


def test_a_plain_transcript_takes_any_names_but_each_once() -> None:
    assert roles_problem(("left", "ch2"), any_name=True) is None
    problem = roles_problem(("ch1", "ch1"), any_name=True)
    assert problem == "must name each channel once, e.g. agent,customer (got ch1,ch1)"
    assert roles_problem(("agent", ""), any_name=True) is not None
