"""Bytes as shipped and sender times as spent: what a latency table reads must be true."""

from __future__ import annotations

import duckdb
import torch
from typer.testing import CliRunner

from interlat_bench.harness.cli import app
from interlat_bench.methods.base import NO_MESSAGE, Message


def test_bytes_are_those_of_the_message_as_shipped():
    latents = torch.randn(7, 64, dtype=torch.float32)  # what the loader returns in memory
    latent = Message(kind="latent", text="plan", token_ids=(1, 2), latents=latents)
    assert latent.nbytes == 7 * 64 * 2 == len(latent.wire_bytes())  # float16 on the wire
    assert torch.equal(torch.frombuffer(bytearray(latent.wire_bytes()), dtype=torch.float16).view(7, 64),
                       latents.half())
    text = Message(kind="text", text="put the mug in the café sink ✓", token_ids=(1,))
    assert text.nbytes == len("put the mug in the café sink ✓".encode()) == len(text.wire_bytes()) == 33
    assert NO_MESSAGE.nbytes == 0 == len(NO_MESSAGE.wire_bytes())
    assert latent.as_text().nbytes == 4 and latent.as_text().latents is None


def _rows(db, sql):
    con = duckdb.connect(str(db), read_only=True)
    try:
        return con.execute(sql).fetchall()
    finally:
        con.close()


def test_cached_messages_replay_no_sender_time_and_every_sample_has_a_wall_time(results_env):
    args = ["run", "-m", "text_zeroshot", "-t", "math", "--limit", "2", "--receiver", "tiny-llama",
            "--sender", "tiny-llama", "--param", "plan_tokens=5", "--no-leaderboard"]
    runner = CliRunner()
    for reply_tokens in ("4", "3"):  # a new run key; the sender's messages are the same
        result = runner.invoke(app, [*args, "--max-new-tokens", reply_tokens])
        assert result.exit_code == 0, result.output
    rows = _rows(results_env, """
        select r.spec->'decoding'->>'max_new_tokens' as cap, s.sample_id,
               s.metrics->>'message_from_cache' as cached,
               (select count(*) from timings t where t.run_key = s.run_key and t.sample_id = s.sample_id
                                                  and t.stage = 'sender') as sender_rows,
               (select min(ms) from timings t where t.run_key = s.run_key and t.sample_id = s.sample_id
                                                and t.stage = 'wall') as wall
        from samples s join runs r using (run_key) order by 1 desc, 2""")
    assert len(rows) == 4
    first, second = rows[:2], rows[2:]
    assert [r[0] for r in first] == ["4", "4"] and [r[0] for r in second] == ["3", "3"]
    assert all(r[2] == "false" and r[3] == 1 for r in first)   # generated in this invocation
    assert all(r[2] == "true" and r[3] == 0 for r in second)   # read back: no replayed time
    assert all(r[4] is not None and r[4] > 0 for r in rows)
