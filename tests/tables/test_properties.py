"""Property tests: texthash round-trips, parsers raise only TableError."""

from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st

from mta.tables import open_table
from mta.tables.base import WHITESPACE, LookupTable, TableError
from mta.tables.cidr import CidrTable
from mta.tables.inline import parse_inline
from mta.tables.matchlist import DomainList, NetworkList
from mta.tables.search import address_keys, client_keys, domain_keys
from mta.tables.static import StaticTable, parse_static
from mta.tables.texthash import TextHashTable

# Printable text plus ASCII blanks: no newlines, no other control characters.
chars = st.characters(exclude_categories=("Cc", "Cs"), include_characters=" \t")
keys = st.text(chars, min_size=1, max_size=20)
values = st.text(chars, min_size=1, max_size=30).map(lambda v: v.strip(WHITESPACE)).filter(bool)


def _key_text(key: str) -> str:
    """Write a key as postmap input: quoted when it needs to be."""
    if key[0] in '"#' or any(ch in WHITESPACE for ch in key):
        return '"' + key.replace("\\", "\\\\").replace('"', '\\"') + '"'
    return key


def _split_points(line: str) -> list[int]:
    """Positions where the line may be broken into a continuation line: at
    white space, when the rest does not look like a comment."""
    return [
        i
        for i, ch in enumerate(line)
        if i > 0 and ch in " \t" and not line[i:].lstrip(" \t").startswith("#")
    ]


fillers = st.sampled_from(["", "   ", "\t", "# comment", "   # indented comment", "#"])


separators = st.sampled_from([" ", "\t", "  "])


@given(st.dictionaries(keys, values, max_size=12), st.data())
@settings(max_examples=200, deadline=None)
def test_texthash_round_trip(mapping: dict[str, str], data: st.DataObject) -> None:
    """Any mapping written as postmap input, with comments, blank lines and
    continuation lines wherever they are allowed, reads back the same."""
    written: dict[str, str] = {}  # one key per folded form: the first
    for key, value in mapping.items():
        if all(k.casefold() != key.casefold() for k in written):
            written[key] = value
    physical: list[str] = []
    for key, value in written.items():
        physical.extend(data.draw(st.lists(fillers, max_size=2)))
        line = _key_text(key) + data.draw(separators) + value
        points = _split_points(line)
        cuts = (
            sorted(set(data.draw(st.lists(st.sampled_from(points), max_size=3)))) if points else []
        )
        pieces: list[str] = []
        for begin, end in zip([0, *cuts], [*cuts, len(line)], strict=True):
            segment = line[begin:end]
            if pieces and not segment.strip(" \t"):
                pieces[-1] += segment  # a blank line would be dropped, not continued
            else:
                pieces.append(segment)
        for i, piece in enumerate(pieces):
            if i:
                physical.extend(data.draw(st.lists(fillers, max_size=1)))
            physical.append(piece)
    text = "\n".join(physical) + data.draw(st.sampled_from(["", "\n"]))

    table = TextHashTable.from_bytes("texthash:t", text.encode(), file="t")

    assert dict(table.entries) == {k.casefold(): v for k, v in written.items()}
    assert not [w for w in table.warnings if "duplicate" in w]
    for key, value in written.items():
        assert table.lookup(key) == value
        assert table.lookup(key.upper()) in (value, None)


@given(st.binary(max_size=300))
def test_texthash_only_raises_table_error(data: bytes) -> None:
    """Arbitrary bytes either parse or raise TableError."""
    try:
        TextHashTable.from_bytes("texthash:t", data, file="t")
    except TableError:
        pass


cidr_words = st.sampled_from(
    [
        "if",
        "endif",
        "ENDIF",
        "!",
        "!!",
        "192.0.2.0/24",
        "10.0.0.1",
        "[::1]/128",
        "::/0",
        "2001:db8::/32",
        "1.2.3.4/33",
        "x",
        "#",
        " ",
        "\n",
        "\t",
        "/",
        "[",
        "]",
        "OK",
    ]
)


@given(st.lists(cidr_words, max_size=40).map("".join) | st.text(max_size=200), st.text(max_size=40))
def test_cidr_only_raises_table_error(text: str, key: str) -> None:
    """Arbitrary cidr text parses or raises TableError; lookups never raise."""
    try:
        table = CidrTable.from_bytes("cidr:t", text.encode("utf-8", "surrogatepass"), file="t")
    except TableError:
        return
    result = table.lookup(key)
    assert result is None or isinstance(result, str)


@given(st.text(max_size=80))
def test_inline_and_static_only_raise_table_error(text: str) -> None:
    """inline:{...} and static:{...} bodies parse or raise TableError."""
    for parse in (parse_inline, parse_static):
        try:
            parse(text)
        except TableError:
            pass
    try:
        parse_inline("{" + text + "}")
    except TableError:
        pass


@given(
    st.text(max_size=40).filter(
        lambda s: (
            not s.startswith(
                ("hash", "btree", "lmdb", "cdb", "dbm", "sdbm", "texthash", "cidr", "proxy")
            )
        )
    )
)
def test_open_table_only_raises_table_error(spec: str) -> None:
    """Non-file specs open or raise TableError (file types are not fuzzed
    here so that no real device file is ever read)."""
    try:
        open_table(spec, base_dir=Path("/nonexistent"))
    except TableError:
        pass


def _fake_opener(spec: str) -> LookupTable:
    if spec.startswith("bad"):
        raise TableError("bad table")
    return StaticTable(spec, "x")


@given(st.lists(st.text(max_size=20), max_size=6), st.text(max_size=30), st.booleans())
def test_match_lists_only_raise_table_error(elements: list[str], probe: str, parent: bool) -> None:
    """Arbitrary elements build a list or raise TableError; matching any
    string returns a bool."""
    try:
        dl = DomainList(
            elements,
            parent_matches_subdomains=parent,
            base_dir=Path("/nonexistent"),
            opener=_fake_opener,
        )
    except TableError:
        pass
    else:
        assert isinstance(dl.matches(probe), bool)
    try:
        nl = NetworkList(elements, base_dir=Path("/nonexistent"), opener=_fake_opener)
    except TableError:
        pass
    else:
        assert isinstance(nl.matches(probe), bool)


@given(st.text(max_size=40), st.text(max_size=5), st.booleans())
def test_search_keys_never_raise(text: str, delimiter: str, parent: bool) -> None:
    """The key generators accept any strings; the first key is the input
    (or the null key) whenever there is one."""
    keys = address_keys(text, delimiter, parent_matches_subdomains=parent)
    assert keys[0] == (text if text not in ("", "<>") else "<>")
    domain_keys(text, parent)
    client_keys(text, text, parent_matches_subdomains=parent)
