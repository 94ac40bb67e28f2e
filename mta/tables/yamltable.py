"""``yaml:FILE`` tables: a YAML mapping of lookup keys to results (an mta extension).

Input: a YAML file whose document is one mapping::

    # yaml:/etc/mta/sender_access.yaml
    spammer@example.com: REJECT spam source
    example.net: OK
    192.0.2: REJECT blocked network     # keys are text, as in a hash: table
    "user@example.org": OK
    alias@example.org: [a@example.net, b@example.net]   # list: "a@..., b@..."

Rules, chosen so that a YAML file means what the same postmap(1) text
file would mean:

* Keys and values are taken *as written*: YAML's type guessing is not
  applied, so ``yes``, ``on``, ``010`` and ``1.50`` stay that text (no
  booleans, no numbers).  Quoting is allowed and removed.
* A value is a text or a list of texts; a list becomes one result with its
  elements joined by ``", "`` (the postmap form for several addresses).
  An empty value, a nested mapping and a list holding a list are errors.
* Keys are case-insensitive, like ``hash:``; a repeated key keeps its
  first value and is reported as a warning, as postmap does.
* An empty file is an empty table.

Output: a :class:`~mta.tables.texthash.TextHashTable` (a fixed-string
table: the search order tries partial keys on it).  Errors are
:class:`TableError` with file and line.
"""

from __future__ import annotations

from pathlib import Path

import yaml

from mta.tables.base import TableError, read_table_file, resolve_path
from mta.tables.texthash import TextHashTable


def _line(node: yaml.Node) -> int:
    return int(node.start_mark.line) + 1


def parse_yaml(data: bytes, file: str) -> tuple[dict[str, str], list[str]]:
    """The folded key/value pairs of a yaml: table, and warnings."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise TableError(f"not UTF-8 text: {e}", file) from None
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.MarkedYAMLError as e:
        mark = e.problem_mark or e.context_mark
        line = int(mark.line) + 1 if mark is not None else None
        raise TableError(f"YAML syntax error: {e.problem or e}", file, line) from None
    except yaml.YAMLError as e:
        raise TableError(f"YAML error: {e}", file) from None
    entries: dict[str, str] = {}
    warnings: list[str] = []
    if root is None:
        return entries, warnings
    if not isinstance(root, yaml.MappingNode):
        raise TableError("the document must be a mapping of keys to results", file, _line(root))
    for key_node, value_node in root.value:
        if not isinstance(key_node, yaml.ScalarNode) or not key_node.value:
            raise TableError("a key must be a non-empty text", file, _line(key_node))
        key = key_node.value
        value = _value(key, value_node, file)
        folded = key.casefold()
        if folded in entries:
            warnings.append(f'{file}:{_line(key_node)}: duplicate entry: "{folded}" -- ignored')
            continue
        entries[folded] = value
    return entries, warnings


def _value(key: str, node: yaml.Node, file: str) -> str:
    if isinstance(node, yaml.ScalarNode):
        if node.value == "" and node.style is None:
            raise TableError(f'missing value after key "{key}"', file, _line(node))
        if "\n" in node.value:
            raise TableError(f'the value of "{key}" spans lines', file, _line(node))
        return str(node.value)
    if isinstance(node, yaml.SequenceNode):
        items: list[str] = []
        for item in node.value:
            if not isinstance(item, yaml.ScalarNode) or not item.value:
                raise TableError(
                    f'the list of "{key}" may hold only non-empty texts', file, _line(item)
                )
            items.append(str(item.value))
        if not items:
            raise TableError(f'empty list after key "{key}"', file, _line(node))
        return ", ".join(items)
    raise TableError(f'the value of "{key}" must be a text or a list', file, _line(node))


def open_yaml(spec: str, name: str, base_dir: Path) -> TextHashTable:
    """Registry opener for ``yaml:FILE``."""
    path = resolve_path(name, base_dir)
    entries, warnings = parse_yaml(read_table_file(path), str(path))
    return TextHashTable(spec, entries, warnings)
