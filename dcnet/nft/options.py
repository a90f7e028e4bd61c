"""The nft target's options (``--nft-netns``, ...), declared apart from the target so
that a command line can offer every target's flags without importing the targets (the
nft target brings numpy for Maglev)."""

from __future__ import annotations

from dcnet.target.base import Option

DEFAULT_STATE_DIR = "/var/lib/dcnet/nft"
MAGLEV_DEFAULT_SIZE = 65537      # a prime; dcnet.nft.maglev.DEFAULT_SIZE

OPTIONS: tuple[Option, ...] = (
    Option("netns", "nft-netns", "run nft inside this named network namespace",
           envvar="DCNET_NFT_NETNS"),
    Option("state_dir", "nft-state-dir", "the nft target's state directory (lock)",
           default=DEFAULT_STATE_DIR, envvar="DCNET_NFT_STATE_DIR", path=True),
    Option("maglev_size", "nft-maglev-size", "minimum (prime) size of Maglev tables",
           type=int, default=MAGLEV_DEFAULT_SIZE, envvar="DCNET_NFT_MAGLEV_SIZE"),
    Option("registry_dir", "nft-registry-dir", "merge the dynamic registry of this LVS "
           "state directory (elbctl backend add/drain/remove) into the model",
           envvar="DCNET_NFT_REGISTRY_DIR", path=True),
    Option("carrier_routing", "nft-carrier-routing", "mark connections by carrier and "
           "route their replies by the carrier tables (fwmark rules, default routes)",
           type=bool, default=False, envvar="DCNET_NFT_CARRIER_ROUTING", is_flag=True),
    Option("health", "nft-health", "give weight 0 to real servers whose health check "
           "is down in <state dir>/health-<netns>.json (written by elbctl health)",
           type=bool, default=False, envvar="DCNET_NFT_HEALTH", is_flag=True),
    Option("dr", "nft-dr", "render forward: dr ports as stateless fwd in table netdev "
           "dcnet (ingress on the carriers' uplinks; docs/nft.md)",
           type=bool, default=False, envvar="DCNET_NFT_DR", is_flag=True),
)
