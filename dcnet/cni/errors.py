"""CNI error codes (spec 1.1.0) and the one exception type every dcnet CNI command raises.

It owns the numeric codes, ``CniError`` (code, msg, details) and its JSON form, which the
skeleton prints on stdout. Plugin-specific codes (100 and up) are listed here too, so the
whole table lives in one place (docs/cni.md repeats it).
"""

from __future__ import annotations

INCOMPATIBLE_VERSION = 1
UNSUPPORTED_FIELD = 2
UNKNOWN_CONTAINER = 3
INVALID_ENV = 4
IO_FAILURE = 5
DECODE_FAILURE = 6
INVALID_CONFIG = 7
INVALID_NETNS = 8
TRY_AGAIN_LATER = 11
NOT_AVAILABLE = 50
LIMITED_CONNECTIVITY = 51
# plugin specific
NO_FREE_ADDRESS = 100
ADDRESS_UNAVAILABLE = 101
LINK_FAILURE = 102
CHECK_FAILED = 103
INTERNAL = 999


class CniError(Exception):
    """A CNI failure: ``code`` from the table above, a short ``msg`` and ``details``."""

    def __init__(self, code: int, msg: str, details: str = ""):
        super().__init__(f"{msg}; {details}" if details else msg)
        self.code = code
        self.msg = msg
        self.details = details

    def to_json(self, cni_version: str) -> dict:
        out = {"cniVersion": cni_version, "code": self.code, "msg": self.msg}
        if self.details:
            out["details"] = self.details
        return out
