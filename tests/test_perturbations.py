"""Each perturbation keeps the statistics SPEC section 6 says it keeps, and nothing it should not.

Pure functions on small float64 matrices: exact identities to float tolerance where the
perturbation is exact (randomrot), expectations over many seeded draws with bounds that a
wrong scale would break where it is random (a T = 4 message makes 1/(T-1) against 1/T a
25% error in covariance; the bounds are about 5%).
"""

from __future__ import annotations

import pytest
import torch

from interlat_bench.harness.core.registry import methods
from interlat_bench.methods.base import Message
from interlat_bench.methods.perturbations.covariance import covgauss, covnoise
from interlat_bench.methods.perturbations.cross_task import other_task
from interlat_bench.methods.perturbations.randomrot import randomrot
from interlat_bench.methods.perturbations.truncate import kept_rows, truncate
from interlat_bench.methods.perturbations.whitenoise import matched_sigma, whitenoise

DRAWS = 20000


def message(t: int = 4, h: int = 6, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    # A mean far from zero and unequal scales per dimension, as last-layer states have.
    return torch.randn(t, h, generator=g, dtype=torch.float64) * torch.linspace(0.5, 3, h, dtype=torch.float64) + 5


def sigma_hat(m: torch.Tensor) -> torch.Tensor:
    x = m - m.mean(0)
    return x.T @ x / (m.shape[0] - 1)


def rng(seed: int = 1) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def second_moment(draws: torch.Tensor) -> torch.Tensor:
    """E[e e^T] over every row of every draw (draws: N x T x H, zero-mean by construction)."""
    rows = draws.reshape(-1, draws.shape[-1])
    return rows.T @ rows / rows.shape[0]


def rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).norm() / b.norm())


def test_randomrot_keeps_mean_and_covariance_exactly_and_changes_rows():
    m = message(t=7, h=5)
    out = randomrot(m, rng())
    assert torch.allclose(out.mean(0), m.mean(0), atol=1e-10)
    assert torch.allclose(sigma_hat(out), sigma_hat(m), atol=1e-10)
    assert (out - m).abs().max() > 0.1  # the rows themselves change
    assert torch.equal(out, randomrot(m, rng()))  # seeded
    assert not torch.allclose(out, randomrot(m, rng(2)))


def test_randomrot_wide_message_rank_deficient():
    # More dimensions than rows (as real messages: L rows x 576): rank T-1 after centring.
    m = message(t=5, h=12)
    out = randomrot(m, rng())
    assert torch.allclose(out.mean(0), m.mean(0), atol=1e-10)
    assert torch.allclose(sigma_hat(out), sigma_hat(m), atol=1e-9)


@pytest.mark.parametrize("keep_mean", [False, True])
def test_covgauss_matches_the_covariance_in_expectation(keep_mean):
    m = message()
    g = rng()
    mu = m.mean(0)
    draws = torch.stack([covgauss(m, g, keep_mean=keep_mean) for _ in range(DRAWS)])
    centred = draws - mu if keep_mean else draws
    assert rel_err(second_moment(centred), sigma_hat(m)) < 0.05
    # covgauss0 has mean 0, covgauss_mu has mean mu_hat.
    assert float((draws.mean((0, 1)) - (mu if keep_mean else 0)).abs().max()) < 0.1


@pytest.mark.parametrize("a", [0.5, 1.0])
def test_covnoise_adds_a_times_covariance_noise(a):
    m = message()
    g = rng()
    noise = torch.stack([covnoise(m, g, a) for _ in range(DRAWS)]) - m
    assert rel_err(second_moment(noise), a * a * sigma_hat(m)) < 0.05
    assert float(noise.mean((0, 1)).abs().max()) < 0.05


def test_whitenoise_sigma_is_matched_to_the_message_and_isotropic():
    m = message()
    h = m.shape[1]
    assert matched_sigma(m) == pytest.approx(float(torch.trace(sigma_hat(m)) / h) ** 0.5)
    g = rng()
    noise = torch.stack([whitenoise(m, g) for _ in range(DRAWS)]) - m
    expected = matched_sigma(m) ** 2 * torch.eye(h, dtype=torch.float64)
    assert rel_err(second_moment(noise), expected) < 0.05
    fixed = torch.stack([whitenoise(m, g, sigma=0.3) for _ in range(DRAWS)]) - m
    assert float(fixed.std()) == pytest.approx(0.3, rel=0.02)


def test_one_row_messages_have_no_covariance_to_draw_from():
    m = message(t=1)
    assert torch.equal(covgauss(m, rng(), keep_mean=False), torch.zeros_like(m))
    assert torch.equal(covgauss(m, rng(), keep_mean=True), m)
    assert torch.equal(randomrot(m, rng()), m)
    assert matched_sigma(m) == 0.0


@pytest.mark.parametrize(("rho", "rows", "kept"), [(0.9, 10, 9), (0.5, 5, 3), (0.0, 16, 0), (1.0, 16, 16),
                                                   (0.7, 10, 7), (0.5, 1, 1)])
def test_truncate_keeps_the_first_ceil_rho_l_rows(rho, rows, kept):
    m = message(t=rows)
    assert kept_rows(rho, rows) == kept
    assert torch.equal(truncate(m, rho), m[:kept])


def test_cross_task_never_returns_the_own_task_and_is_seeded():
    pool = [f"t{i}" for i in range(8)]
    picks = {t: other_task(t, pool, seed=0) for t in pool}
    assert all(p != t and p in pool for t, p in picks.items())
    assert picks == {t: other_task(t, list(reversed(pool)), seed=0) for t in pool}  # order-free
    assert len(set(picks.values())) > 3  # spread over the pool, not one fixed task
    assert any(other_task(t, pool, seed=1) != picks[t] for t in pool)


def test_transform_is_seeded_per_sample_and_keeps_the_wire_dtype():
    impl = methods.get("randomrot")()
    msg = Message(kind="latent", text="plan", latents=message(t=6, h=8).to(torch.float16))
    a, b = impl.transform(msg, rng(3)), impl.transform(msg, rng(3))
    assert a.latents.dtype == torch.float16 and torch.equal(a.latents, b.latents)
    assert a.text == "plan" and a.nbytes == msg.nbytes
    cut = methods.get("truncate")({"rho": 0.0}).transform(msg, rng())
    assert cut.rows == 0 and cut.nbytes == 0


def test_every_perturbation_reuses_the_latent_receiver():
    """Same training parameters as `latent`, so the same checkpoint key; only their own
    parameters differ, and those stay out of training."""
    latent = methods.get("latent")
    names = ["cross_task", "whitenoise", "covnoise", "covgauss0", "covgauss_mu", "randomrot", "truncate",
             "untrained_k"]
    for name in names:
        cls = methods.get(name)
        assert cls.trained_with == "latent" and issubclass(cls, latent)
        assert {k: v for k, v in cls.defaults.items() if k in latent.defaults} == latent.defaults
        assert cls({}).train_config.__func__ is latent.train_config


def test_ablation_rows_reuse_one_trained_receiver(results_env):
    """The perturbation rows, untrained_k and compressed_k play on the receiver `latent` trained: one
    checkpoint in the cache, every cell complete, the messages as each row defines them."""
    import duckdb
    from typer.testing import CliRunner

    from interlat_bench.harness.cli import app
    from interlat_bench.harness.core.settings import cache_dir

    out = CliRunner().invoke(app, [
        "run", "-m", "latent,truncate,cross_task,randomrot,untrained_k,compressed_k", "-t", "probe", "--limit", "3",
        "--receiver", "tiny-llama", "--sender", "tiny-llama", "--max-new-tokens", "2",
        "--param", "n_train=4", "--param", "plan_tokens=6", "--param", "k=2", "--no-leaderboard"])
    assert out.exit_code == 0, out.output
    assert len(list((cache_dir() / "receivers").iterdir())) == 1
    con = duckdb.connect(str(results_env), read_only=True)
    rows = dict(con.execute("""
        select r.method || coalesce('/' || (r.spec->'method_params'->>'rho'), ''),
               list(s.metrics->>'message_rows' order by s.sample_id)
        from samples s join runs r using (run_key) where s.error is null group by 1""").fetchall())
    assert rows["latent"] == ["6"] * 3
    assert rows["truncate/0.9"] == ["6"] * 3 and rows["truncate/0.5"] == ["3"] * 3 and rows["truncate/0.0"] == ["0"] * 3
    assert rows["untrained_k"] == rows["compressed_k"] == ["2"] * 3
    assert len(list((cache_dir() / "students").iterdir())) == 1  # compressed_k's student
    assert len(rows["cross_task"]) == len(rows["randomrot"]) == 3
