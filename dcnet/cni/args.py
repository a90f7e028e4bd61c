"""CNI_ARGS: ``K=V;K=V`` as libcni's ``types.LoadArgs`` parses it.

Known keys are the ones kubelet passes plus the two dcnet honours (``IP`` asks for a
specific address, ``MAC`` for a specific MAC); an unknown key is an error unless
``IgnoreUnknown`` is 1/true (code 4: CNI_ARGS is an environment variable).
"""

from __future__ import annotations

from dcnet.cni.errors import INVALID_ENV, CniError

KNOWN = ("IgnoreUnknown", "K8S_POD_NAMESPACE", "K8S_POD_NAME", "K8S_POD_INFRA_CONTAINER_ID",
         "K8S_POD_UID", "IP", "MAC")
_TRUE = ("1", "true")
_FALSE = ("0", "false")


def parse_args(text: str) -> dict[str, str]:
    """The known pairs of CNI_ARGS as a dict; CniError(4) on a malformed or unknown pair."""
    if not text:
        return {}
    found: dict[str, str] = {}
    unknown = []
    for pair in text.split(";"):
        kv = pair.split("=")
        if len(kv) != 2:
            raise CniError(INVALID_ENV, f"CNI_ARGS: invalid pair {pair!r}", "expected K=V;K=V")
        key, value = kv
        if key not in KNOWN:
            unknown.append(pair)
            continue
        if key == "IgnoreUnknown" and value.lower() not in _TRUE + _FALSE:
            raise CniError(INVALID_ENV, f"CNI_ARGS: error parsing value of pair {pair!r}",
                           "IgnoreUnknown takes 1, 0, true or false")
        found[key] = value
    if unknown and found.get("IgnoreUnknown", "0").lower() not in _TRUE:
        raise CniError(INVALID_ENV, f"CNI_ARGS: unknown args {unknown}",
                       "set IgnoreUnknown=1 to ignore them")
    return found
