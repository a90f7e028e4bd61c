"""What the nft target's two tables' JSON listings share (pure): chains and their rules'
digests, and the state of dcnet's chains, for ``inet dcnet`` (:mod:`dcnet.nft.nftio`)
and DR's ``netdev dcnet`` (:mod:`dcnet.nft.dr`).

A rule's digest is what its ``comment "dcnet:<digest>"`` carries; a rule without that
comment (added or edited by hand) reads as ``?``, so its chain is rewritten.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

COMMENT = "dcnet:"


def split(items: Iterable[dict], other: Callable[[dict], None]
          ) -> tuple[dict[str, dict], dict[str, list[str]]]:
    """(chains by name, each chain's rule digests in order) of a table listing's items;
    every item that is neither a chain nor a rule goes to ``other``, in one pass."""
    chains: dict[str, dict] = {}
    rules: dict[str, list[str]] = {}
    for item in items:
        if "chain" in item:
            chains[item["chain"]["name"]] = item["chain"]
            rules.setdefault(item["chain"]["name"], [])
        elif "rule" in item:
            comment = item["rule"].get("comment", "")
            rules.setdefault(item["rule"]["chain"], []).append(
                comment[len(COMMENT):] if comment.startswith(COMMENT) else "?")
        else:
            other(item)
    return chains, rules


def chain_states(chains: dict[str, dict], rules: dict[str, list[str]], parse_name,
                 kinds: tuple[str, ...], hook_kind: str, where: str,
                 notes: list[str]) -> dict:
    """{(kind, key): {"rules": digests} (hook chains also "hook" and "priority")} of the
    chains ``parse_name`` knows as one of ``kinds``; a note for every other chain."""
    state: dict = {}
    for name, chain in chains.items():
        ident = parse_name(name)
        if ident is None or ident[0] not in kinds:
            notes.append(f"foreign chain {name!r} in table {where} left alone")
            continue
        attrs: dict = {"rules": tuple(rules.get(name, ()))}
        if ident[0] == hook_kind:
            attrs = {"hook": chain.get("hook"), "priority": chain.get("prio"), **attrs}
        state[ident] = attrs
    return state
