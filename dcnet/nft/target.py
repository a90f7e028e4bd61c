"""The ``nft`` target of ``elbctl plan|apply``: the ELB of the service model in nftables.

It owns only ``table ip dcnet`` (see :mod:`dcnet.nft.ruleset` for what is in it). A plan
reads that table (two ``nft -j list`` calls, never the whole ruleset), derives the
desired ruleset from the model (pure), diffs them and carries in its payload the rules
and map elements every created or updated object needs, so a fresh instance can apply
it. Every kind is batched and the batch is unbounded: an apply is ONE ``nft -f``
transaction holding every change, which nft applies entirely or not at all (a refused
transaction reports every change of it as failed and nothing as applied, so there is
nothing to undo). A no-op plan runs no transaction.

Options: ``--nft-netns`` / ``$DCNET_NFT_NETNS`` (run nft inside that named namespace),
``--nft-state-dir`` / ``$DCNET_NFT_STATE_DIR`` (where the lock lives; one lock per
namespace), ``--nft-maglev-size`` (minimum prime size of Maglev tables).
"""

from __future__ import annotations

import os
from types import MappingProxyType

from dcnet.nft import maglev, ruleset
from dcnet.nft import script as nftscript
from dcnet.nft.nftio import Nft, NftError, NftUnavailable
from dcnet.plan import Change, Plan, State, diff
from dcnet.target import Option, Snapshot, Target

DEFAULT_STATE_DIR = "/var/lib/dcnet/nft"


class NftTarget(Target):
    name = "nft"
    kind_order = ruleset.KIND_ORDER
    options = (
        Option("netns", "nft-netns", "run nft inside this named network namespace",
               envvar="DCNET_NFT_NETNS"),
        Option("state_dir", "nft-state-dir", "the nft target's state directory (lock)",
               default=DEFAULT_STATE_DIR, envvar="DCNET_NFT_STATE_DIR", path=True),
        Option("maglev_size", "nft-maglev-size", "minimum (prime) size of Maglev tables",
               type=int, default=maglev.DEFAULT_SIZE, envvar="DCNET_NFT_MAGLEV_SIZE"),
    )
    batch_kinds = frozenset(ruleset.KIND_ORDER)
    batch_size = 1 << 62            # one transaction for the whole plan
    refused_errors = (NftError, nftscript.MissingBody, ValueError)
    unavailable_errors = (NftUnavailable,)

    def __init__(self, netns: str | None = None, state_dir: str | None = None,
                 maglev_size: int | None = None):
        self.netns = netns or None
        self.state_dir = state_dir or DEFAULT_STATE_DIR
        self.maglev_size = maglev_size or maglev.DEFAULT_SIZE
        if not maglev.is_prime(self.maglev_size):
            raise NftError(f"nft: --nft-maglev-size {self.maglev_size} is not prime")
        self.nft = Nft(self.netns)

    def lock_path(self) -> str:
        return os.path.join(self.state_dir, f"lock-{self.netns or 'host'}")

    # ------------------------------------------------------------------ read and plan

    def read(self, model) -> Snapshot:
        listing = self.nft.read()
        return Snapshot(MappingProxyType(listing.state), listing.notes, listing.digest)

    def desired(self, model, current: Snapshot) -> State:
        return ruleset.desired(model, maglev_size=self.maglev_size).state

    def plan(self, model) -> Plan:
        current = self.read(model)
        want = ruleset.desired(model, maglev_size=self.maglev_size)
        changes = diff(current.state, want.state)
        bodies = {ident: want.bodies[ident] for ident in
                  ((c.kind, c.key) for c in changes) if ident in want.bodies}
        return Plan.build(self.name, changes, self.kind_order,
                          (*current.notes, *want.notes), read_digest=current.digest,
                          objects=len(current.state), payload=MappingProxyType(bodies))

    def current_digest(self, plan: Plan) -> str:
        return self.nft.digest()

    # ------------------------------------------------------------------ apply

    def apply_batch(self, changes: list[Change], plan: Plan) -> list[BaseException | None]:
        """All ``changes`` as one nft transaction: all applied, or all failed."""
        try:
            self.nft.run_script(nftscript.script(changes, plan.payload or {}))
        except (NftError, nftscript.MissingBody) as exc:
            return [exc] * len(changes)
        return [None] * len(changes)

    def apply_change(self, change: Change, plan: Plan) -> None:
        error = self.apply_batch([change], plan)[0]
        if error is not None:
            raise error

    def counters(self) -> dict[str, int]:
        return {"nft_transactions": self.nft.transactions, "nft_commands": self.nft.commands}
