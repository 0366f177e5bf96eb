"""The purchase-log models of customer lifetime value, fitted by maximum likelihood: BG/NBD for
how many purchases a customer will still make (Fader, Hardie and Lee 2005, "Counting your
customers the easy way") and Gamma-Gamma for what each will be worth (Fader and Hardie 2013,
"The Gamma-Gamma model of monetary value").

Written here rather than imported: `lifetimes` has had no release since 2020 and `btyd` is a 2022
beta; `pymc-marketing`, the maintained home of these models, brings PyMC and a compiler-backed
PyTensor into a service that needs four parameters and one likelihood each. These are the
papers' closed forms on scipy; the tests hold them to `lifetimes`' fit and predictions on the
CDNOW log it ships.

scipy is imported where used: the API process that answers a value does not need it to start.

Time is in days. A customer is (x, t_x, T): repeat purchases (distinct purchase days after the
first), the day of the last purchase and the customer's age, both counted from the first.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from typing import cast

import numpy as np
from numpy.typing import NDArray

Array = NDArray[np.float64]


@dataclass(frozen=True, slots=True)
class BgNbd:
    r: float
    alpha: float
    a: float
    b: float

    def as_json(self) -> dict[str, float]:
        return asdict(self)


@dataclass(frozen=True, slots=True)
class GammaGamma:
    p: float
    q: float
    v: float

    def as_json(self) -> dict[str, float]:
        return asdict(self)


def stacked(
    fits: Sequence[tuple[BgNbd, GammaGamma]],
) -> tuple[BgNbd, GammaGamma]:
    """Several fits as one, each parameter a column (one row per fit): the formulas below are
    elementwise, so they broadcast over the fits at once (an account's value under 40
    bootstrap refits in one pass, not 40)."""

    def column(values: list[float]) -> float:
        return cast(float, np.array(values, dtype=np.float64)[:, None])

    return (
        BgNbd(*(column([getattr(m, f) for m, _ in fits]) for f in ("r", "alpha", "a", "b"))),
        GammaGamma(*(column([getattr(s, f) for _, s in fits]) for f in ("p", "q", "v"))),
    )


def _bgnbd_loglik(params: Array, x: Array, t_x: Array, big_t: Array) -> Array:
    from scipy import special

    r, alpha, a, b = params
    a1 = special.gammaln(r + x) - special.gammaln(r) + r * np.log(alpha)
    a2 = (
        special.gammaln(a + b)
        + special.gammaln(b + x)
        - special.gammaln(b)
        - special.gammaln(a + b + x)
    )
    a3 = -(r + x) * np.log(alpha + big_t)
    repeat = x > 0
    with np.errstate(divide="ignore", invalid="ignore"):
        a4 = np.where(
            repeat,
            np.log(a) - np.log(np.where(repeat, b + x - 1, 1.0)) - (r + x) * np.log(alpha + t_x),
            -np.inf,
        )
    return np.asarray(a1 + a2 + np.logaddexp(a3, a4), dtype=np.float64)


def _fit(negative: Callable[[Array], float], start: Array, *, polish_only: bool) -> Array:
    from scipy import optimize

    # On the logarithms of the parameters, so that each stays positive; Nelder-Mead as lifetimes
    # does, then a quasi-Newton polish from where it stopped (only the polish from a start that
    # is already near: a bootstrap's refit from the fit on every customer).
    at, value = np.log(start), negative(np.log(start))
    if not polish_only:
        first = optimize.minimize(
            negative,
            at,
            method="Nelder-Mead",
            options={"maxiter": 4000, "xatol": 1e-7, "fatol": 1e-9},
        )
        at, value = first.x, first.fun
    polished = optimize.minimize(negative, at, method="L-BFGS-B")
    best = polished.x if polished.fun <= value else at
    return np.asarray(np.exp(best), dtype=np.float64)


def fit_bgnbd(
    x: Array,
    t_x: Array,
    big_t: Array,
    weights: Array | None = None,
    *,
    start: BgNbd | None = None,
) -> BgNbd:
    """The BG/NBD parameters that maximise the likelihood of these customers (each counted
    `weights` times: a bootstrap's resample), searched from `start` when given."""
    w = np.ones_like(x) if weights is None else weights
    n = w.sum()

    def negative(log_params: Array) -> float:
        ll = _bgnbd_loglik(np.exp(log_params), x, t_x, big_t)
        return float(-(w * ll).sum() / n)

    first = (
        np.array([1.0, max(float(np.mean(big_t)), 1.0), 1.0, 1.0])
        if start is None
        else np.array([start.r, start.alpha, start.a, start.b])
    )
    r, alpha, a, b = _fit(negative, first, polish_only=start is not None)
    return BgNbd(float(r), float(alpha), float(a), float(b))


def expected_purchases(m: BgNbd, t: float | Array, x: Array, t_x: Array, big_t: Array) -> Array:
    """Expected purchases in the next t days of each customer with this history (FHL 2005,
    equation 10)."""
    from scipy import special

    r, alpha, a, b = m.r, m.alpha, m.a, m.b
    t = np.asarray(t, dtype=np.float64)
    z = t / (alpha + big_t + t)
    hyp = special.hyp2f1(r + x, b + x, a + b + x - 1, z)
    first = (a + b + x - 1) / (a - 1)
    second = 1 - ((alpha + big_t) / (alpha + big_t + t)) ** (r + x) * hyp
    repeat = x > 0
    denominator = 1 + np.where(
        repeat,
        a / np.where(repeat, b + x - 1, 1.0) * ((alpha + big_t) / (alpha + t_x)) ** (r + x),
        0.0,
    )
    return np.asarray(first * second / denominator, dtype=np.float64)


def probability_alive(m: BgNbd, x: Array, t_x: Array, big_t: Array) -> Array:
    """The probability that each customer is still buying (FHL 2005, equation 11)."""
    r, alpha, a, b = m.r, m.alpha, m.a, m.b
    repeat = x > 0
    odds = np.where(
        repeat,
        a / np.where(repeat, b + x - 1, 1.0) * ((alpha + big_t) / (alpha + t_x)) ** (r + x),
        0.0,
    )
    return np.asarray(1 / (1 + odds), dtype=np.float64)


def _gamma_gamma_loglik(params: Array, x: Array, mean: Array) -> Array:
    from scipy import special

    p, q, v = params
    return np.asarray(
        special.gammaln(p * x + q)
        - special.gammaln(p * x)
        - special.gammaln(q)
        + q * np.log(v)
        + (p * x - 1) * np.log(mean)
        + (p * x) * np.log(x)
        - (p * x + q) * np.log(x * mean + v),
        dtype=np.float64,
    )


def fit_gamma_gamma(
    x: Array, mean: Array, weights: Array | None = None, *, start: GammaGamma | None = None
) -> GammaGamma:
    """The Gamma-Gamma parameters of the repeat customers' mean spend per purchase (x > 0:
    the model describes the spend of customers seen buying more than once)."""
    w = np.ones_like(x) if weights is None else weights
    n = w.sum()

    def negative(log_params: Array) -> float:
        return float(-(w * _gamma_gamma_loglik(np.exp(log_params), x, mean)).sum() / n)

    first = (
        np.array([1.0, 1.0, max(float(np.mean(mean)), 1.0)])
        if start is None
        else np.array([start.p, start.q, start.v])
    )
    p, q, v = _fit(negative, first, polish_only=start is not None)
    return GammaGamma(float(p), float(q), float(v))


def expected_spend(m: GammaGamma, x: Array, mean: Array) -> Array:
    """Each customer's expected spend per purchase: the population's mean, p v / (q - 1),
    weighed against the customer's own mean by how many purchases it rests on (FH 2013, eq. 5);
    a customer with no repeat purchase gets the population's."""
    p, q, v = m.p, m.q, m.v
    own = np.where(x > 0, mean, 0.0)
    return np.asarray((p * (v + x * own)) / (p * x + q - 1), dtype=np.float64)
