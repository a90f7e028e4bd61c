"""dcnet.lab.init_lvs_lab's records: the keep-alive load's lines (as bash and curl's
``-w`` write them) parsed, and the roll's counts per kind, failures with curl's error,
reused connections and answers by an instance between its SIGTERM and its exit."""

from __future__ import annotations

from dcnet.lab import init_lvs_lab as ilab

KEEPALIVE = (
    "100.50 rs1|200|1|0.500|0|\n"
    "101.00 rs1|200|0|0.010|0|\n"
    "102.00 |000|0|5.000|28|Operation timed out after 5000 milliseconds with 0 bytes\n"
    "103.00 rs2|200|1|0.020|0|\n"
    "truncated line\n"
)


def test_parse_keepalive_start_body_code_connects_error():
    rows = ilab.parse_keepalive(KEEPALIVE)
    assert rows == [
        (100.0, "rs1", "200", 1, ""),
        (100.99, "rs1", "200", 0, ""),
        (97.0, "", "000", 0, "28 Operation timed out after 5000 milliseconds with 0 bytes"),
        (102.98, "rs2", "200", 1, ""),
    ]


def test_rolling_result_counts_both_kinds():
    result = ilab.RollingResult(
        requests=ilab.parse_load("99.0 rs3 200\n99.5  000\n"),
        keepalive=ilab.parse_keepalive(KEEPALIVE),
        rolls=[("rs1", 100.5, 101.5), ("rs2", 110.0, 120.0)])
    assert result.failed == [
        ("new-connection", 99.5, "", "000", ""),
        ("keep-alive", 97.0, "", "000", "28 Operation timed out after 5000 milliseconds "
                                        "with 0 bytes")]
    assert result.reused() == 1
    assert result.answered_while_stopping() == {"rs1": 1, "rs2": 0}
    assert result.served() == {"rs1": 2, "rs2": 1, "rs3": 1}
    assert result.summary().startswith("new-connection requests 1 ok / 1 failed; keep-alive "
                                       "requests 3 ok / 1 failed (1 on a reused connection)")
    assert "FAILED keep-alive request 28 Operation timed out" in result.report()
