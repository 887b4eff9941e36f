import json

from trainer.online.prequential import _log_lines


def test_fast_score_log_lines_are_the_json_lines():
    meta = [{"p": 1, "o": 22, "u": 7, "i": 1003, "ts": 1795575310581, "step": 4},
            {"p": 0, "o": 0, "u": 2**62, "i": 1, "ts": 0, "step": 0},
            {"p": 1, "o": 23, "u": 7, "i": 1003, "ts": 5, "step": 4, "extra": "kept"}]  # other layouts: json
    for frozen in (None, [4, 1, 2]):
        got = _log_lines(meta, [3, 9, 1], frozen).splitlines()
        want = [json.dumps({**m, "rank": r, **({"rank_frozen": frozen[i]} if frozen else {})}, separators=(",", ":"))
                for i, (m, r) in enumerate(zip(meta, [3, 9, 1]))]
        assert got == want
