"""Matching a caller to a stored phone: the whole number, whatever spelling an agent typed.

Pure functions, no servers: ``same_number`` decides, ``search_queries`` proposes what a
``LIKE %…%`` search must be sent so that every common spelling comes back as a candidate.
"""

from __future__ import annotations

import re

import pytest

from connector_core.phones import same_number, search_pattern, search_queries

IVAN = "+79161234567"
FIVE_SPELLINGS = [
    "+7 916 123-45-67",
    "8 (916) 123-45-67",
    "+7(916)1234567",
    "89161234567",
    "9161234567",  # national, read in the default region
]


@pytest.mark.parametrize("stored", FIVE_SPELLINGS)
def test_the_five_spellings_agents_type_are_the_caller(stored: str) -> None:
    assert same_number(stored, IVAN, "RU")


@pytest.mark.parametrize(
    "stored",
    [
        "379161234567",  # ends the same; country code 379, not 7
        "+379161234567",
        "919161234567",  # an Indian mobile: the last ten digits are Ivan's national number
        "+91 91612 34567",
        "79161234567890",  # longer: contains the number
        "779161234567",
    ],
)
def test_a_number_that_only_ends_the_same_is_never_the_caller(stored: str) -> None:
    assert not same_number(stored, IVAN, "RU")


def test_the_look_alike_of_the_issue_is_another_number() -> None:
    assert same_number("79035550101", "+79035550101", "RU")
    assert not same_number("379035550101", "+79035550101", "RU")


@pytest.mark.parametrize("stored", ["123-45-67", "1234567", "4567", "67", "", "доб. 101"])
def test_short_numbers_and_local_numbers_without_the_area_code_are_not_the_caller(
    stored: str,
) -> None:
    assert not same_number(stored, IVAN, "RU")


def test_a_short_number_matches_only_itself() -> None:
    local = "+71234567"  # what normalize makes of a bare 1234567 in RU
    assert same_number("1234567", local, "RU")
    assert not same_number("+7 916 123-45-67", local, "RU")


@pytest.mark.parametrize(
    ("stored", "e164", "region"),
    [
        ("8 (701) 123 4567", "+77011234567", "KZ"),
        ("7011234567", "+77011234567", "KZ"),
        ("90 123 45 67", "+998901234567", "UZ"),
        ("+998 90 123-45-67", "+998901234567", "UZ"),
        ("(650) 253-0000", "+16502530000", "US"),
        ("030 12345678", "+493012345678", "DE"),
    ],
)
def test_national_spellings_are_read_in_the_integrations_region(
    stored: str, e164: str, region: str
) -> None:
    assert same_number(stored, e164, region)


def test_the_same_national_spelling_is_another_number_in_another_region() -> None:
    # "9161234567" is Ivan in Russia; in Uzbekistan it is not a Russian number at all.
    assert same_number("9161234567", IVAN, "RU")
    assert not same_number("9161234567", IVAN, "UZ")
    assert not same_number("(650) 253-0000", "+16502530000", "RU")
    # A spelling with its country code is the same number in any region.
    assert same_number("+7 916 123-45-67", IVAN, "UZ")


def test_search_queries_for_a_russian_number() -> None:
    assert search_queries(IVAN) == ["1234567", "123-45-67", "123 45 67"]


@pytest.mark.parametrize("stored", [*FIVE_SPELLINGS, "8 916 123 45 67", "+7-916-123-45-67"])
def test_some_query_is_inside_every_common_spelling(stored: str) -> None:
    """What Usedesk's ``LIKE %query%`` does: a plain substring test on the stored string."""
    assert any(query in stored for query in search_queries(IVAN))


def like(pattern: str, stored: str) -> bool:
    """SQL ``LIKE '%pattern%'`` with the pattern's own ``%`` live."""
    return re.search(".*".join(map(re.escape, pattern.split("%"))), stored) is not None


@pytest.mark.parametrize(
    "stored",
    [*FIVE_SPELLINGS, "8 916 123 45 67", "+7-916-123-45-67", "+7 916 123 4567", "8 916 123-4567"],
)
def test_one_like_pattern_matches_every_common_spelling(stored: str) -> None:
    assert search_pattern(IVAN) == "123%45%67"
    assert like(search_pattern(IVAN), stored)


@pytest.mark.parametrize(
    ("e164", "pattern"),
    [("+77011234567", "123%4567"), ("+16502530000", "253%0000"), ("+493012345678", "2345678")],
)
def test_the_like_pattern_follows_the_countrys_grouping(e164: str, pattern: str) -> None:
    assert search_pattern(e164) == pattern


@pytest.mark.parametrize(
    ("e164", "queries"),
    [
        ("+998901234567", ["1234567", "123 45 67", "123-45-67"]),
        ("+77011234567", ["1234567", "123 4567", "123-4567"]),
        ("+16502530000", ["2530000", "253-0000", "253 0000"]),
        ("+493012345678", ["2345678"]),  # written "+49 30 12345678": one run, one query
    ],
)
def test_search_queries_follow_the_countrys_grouping(e164: str, queries: list[str]) -> None:
    assert search_queries(e164) == queries


def test_search_queries_refuse_what_is_not_e164() -> None:
    with pytest.raises(ValueError, match=r"not a number in E\.164 form"):
        search_queries("not a number")
