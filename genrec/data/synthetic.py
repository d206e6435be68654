"""genrec's simulated shop: an offline event log with structure a sequence model can learn.

Generative process (all randomness from one numpy Generator seeded by ShopConfig.seed):

Catalog
  * C categories with Zipf-like sizes and base popularity. A fraction of categories are consumable
    (bought again and again). Every category has 2 related categories (where its complements live).
  * B brands, each with a price tier (budget / mid / premium) and spread over a few categories;
    an item's brand is drawn from its category's brands (Zipf weights).
  * price = lognormal around a per-category median, times the brand tier's factor; ~5% out of stock.
  * item popularity inside its category is Zipf (weight (rank + 1) ** -popularity_exponent, ranks
    shuffled so item ids carry no information).
  * every item gets `num_substitutes` similar items (same category) and `num_complements` complements
    (related categories), half popularity-weighted and half uniform: item-specific transitions that
    global popularity cannot predict. They are kept on Shop as ground truth and are not saved.

Users
  * age_group sets a prior over categories; each user draws `favourite_categories` categories from
    it with Dirichlet weights (a sparse Dirichlet taste over categories). region sets the odds of the
    user's preferred brand tier.
  * tastes drift: at each new session, with prob drift_prob, one favourite category is replaced by a
    category related to another favourite (interests wander to neighbours) or, sometimes, a random one.

Sequences (one vectorised step = one item visit for every still-active user)
  * visits per user ~ lognormal (at least min_events), scaled so events per user average about
    events_per_user.
  * a visit continues the session with prob session_continue_prob (gap: about a minute), else a new
    session starts (gap: lognormal, around a day and a half).
  * the visited item: within a session, with prob follow_prob, a neighbour of the previous item:
    a complement if the previous item was carted/bought, else a substitute (first neighbours are the
    likeliest). At a session start, with prob repeat_prob, the last bought consumable is re-visited
    (repeat purchase). Otherwise taste x popularity: a category from the user's favourites (or, with
    prob explore_prob, from global category popularity), then 3 popularity-weighted candidates in
    it, taking the first in the user's preferred brand tier.
  * funnel on the visited item: view, then cart with prob cart_prob (0 when out of stock, higher for
    cheap items and repeats), then purchase with prob purchase_prob; each step seconds to minutes
    after the previous one. A purchase's value is the price paid.
The log is sorted by time over all users; one user's events have strictly increasing timestamps.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import polars as pl

EVENT_TYPES = ("view", "cart", "purchase")
REGIONS = ("north", "south", "east", "west", "central")
AGE_GROUPS = ("18-24", "25-34", "35-44", "45-54", "55+")
TIERS = ("budget", "mid", "premium")
_TIER_PRICE = np.array([0.7, 1.0, 1.7])
_DAY = 86_400


@dataclass(frozen=True)
class ShopConfig:
    num_users: int = 2000
    num_items: int = 1000
    num_categories: int = 20
    num_brands: int = 50
    events_per_user: float = 40.0  # mean events (view + cart + purchase rows) per user
    min_events: int = 5  # every user has at least this many visits, so at least this many events
    seed: int = 0
    start_time: int = 1_700_000_000
    # catalog
    popularity_exponent: float = 1.2  # Zipf exponent of item popularity within a category
    consumable_fraction: float = 0.25  # share of categories whose items are re-bought
    in_stock_prob: float = 0.95
    # tastes
    favourite_categories: int = 3
    taste_concentration: float = 0.7  # Dirichlet alpha over a user's favourites (small = focused)
    explore_prob: float = 0.1  # a taste draw ignores the favourites
    drift_prob: float = 0.15  # per session start: one favourite category is replaced
    # sequential structure
    num_complements: int = 3
    num_substitutes: int = 3
    follow_prob: float = 0.55  # within a session, next item is a neighbour of the previous one
    repeat_prob: float = 0.3  # at a session start, re-visit the last bought consumable
    session_continue_prob: float = 0.8
    # funnel
    cart_prob: float = 0.25
    purchase_prob: float = 0.5

    def __post_init__(self) -> None:
        if self.num_items < self.num_categories:
            raise ValueError("num_items must be >= num_categories (every category needs an item)")
        if min(self.num_users, self.num_categories, self.num_brands, self.min_events) < 1:
            raise ValueError("num_users, num_categories, num_brands and min_events must be positive")


SHOP_SIZES: dict[str, ShopConfig] = {
    # ~9k events: unit tests
    "tiny": ShopConfig(num_users=300, num_items=200, num_categories=8, num_brands=12, events_per_user=30),
    # ~80k events: quick experiments (the defaults)
    "small": ShopConfig(),
    # ~1M events
    "medium": ShopConfig(num_users=20_000, num_items=20_000, num_categories=50, num_brands=200, events_per_user=50),
    # ~4M events
    "large": ShopConfig(num_users=100_000, num_items=200_000, num_categories=100, num_brands=600),
    # ~10M events, 1M items
    "xl": ShopConfig(num_users=250_000, num_items=1_000_000, num_categories=200, num_brands=2000),
}


def shop_config(size: str = "small", **overrides: object) -> ShopConfig:
    """A preset by name, with fields overridden (e.g. seed=3)."""
    if size not in SHOP_SIZES:
        raise ValueError(f"unknown shop size {size!r}: choose from {', '.join(SHOP_SIZES)}")
    return replace(SHOP_SIZES[size], **overrides)


@dataclass
class Shop:
    events: pl.DataFrame  # user_id, item_id, timestamp, event_type, value; sorted by time
    catalog: pl.DataFrame  # item_id, category, brand, price, in_stock, title; row j is item index j
    users: pl.DataFrame  # user_id, region, age_group
    config: ShopConfig
    # ground truth, in catalog row indices (not saved): item j's neighbours
    complements: np.ndarray = field(repr=False)  # (num_items, num_complements)
    substitutes: np.ndarray = field(repr=False)  # (num_items, num_substitutes)

    def save(self, folder: str | Path) -> Path:
        """Write events.parquet, catalog.parquet and users.parquet (readable by genrec.data.io)."""
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        for name, df in (("events", self.events), ("catalog", self.catalog), ("users", self.users)):
            tmp = folder / f"{name}.parquet.tmp"
            df.write_parquet(tmp)
            tmp.replace(folder / f"{name}.parquet")  # atomic: never a half-written file
        return folder


# ---------------------------------------------------------------------------------------------------
# catalog
# ---------------------------------------------------------------------------------------------------


@dataclass
class _Catalog:
    category: np.ndarray  # (N,) int
    brand: np.ndarray  # (N,) int
    price: np.ndarray  # (N,) float64
    in_stock: np.ndarray  # (N,) bool
    cheapness: np.ndarray  # (N,) float, cart-rate multiplier: cheap for its category -> higher
    consumable: np.ndarray  # (C,) bool
    related: np.ndarray  # (C, 2) related categories
    brand_tier: np.ndarray  # (B,) int in 0..2
    cat_cdf: np.ndarray  # (C,) cdf of category popularity
    by_cat: np.ndarray  # (N,) items sorted by category (then random): blocks per category
    block_start: np.ndarray  # (C + 1,) block offsets into by_cat
    pop_cdf: np.ndarray  # (N,) in by_cat order: c + within-category popularity cdf, in (c, c + 1]

    def sample(self, cats: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """One popularity-weighted item per requested category."""
        pos = np.searchsorted(self.pop_cdf, cats + rng.random(cats.shape), side="right")
        # float rounding can step past a block's last cdf value; stay inside the block
        pos = np.clip(pos, self.block_start[cats], self.block_start[cats + 1] - 1)
        return self.by_cat[pos]

    def sample_uniform(self, cats: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        size = self.block_start[cats + 1] - self.block_start[cats]
        return self.by_cat[self.block_start[cats] + (rng.random(cats.shape) * size).astype(np.int64)]


def _zipf(n: int, exponent: float, rng: np.random.Generator) -> np.ndarray:
    """Zipf weights over n things in random order, summing to 1."""
    w = (np.arange(n) + 1.0) ** -exponent
    return rng.permutation(w / w.sum())


def _make_catalog(cfg: ShopConfig, rng: np.random.Generator) -> _Catalog:
    C, N, B = cfg.num_categories, cfg.num_items, cfg.num_brands
    cat_weight = _zipf(C, 0.8, rng)
    # every category gets an item, the rest follow category popularity
    category = np.concatenate([np.arange(C), rng.choice(C, N - C, p=cat_weight)])
    category = rng.permutation(category)
    consumable = rng.random(C) < cfg.consumable_fraction
    related = (np.arange(C)[:, None] + 1 + rng.integers(0, max(C - 1, 1), (C, 2))) % C

    brand_tier = rng.choice(3, B, p=[0.35, 0.45, 0.2])
    brand_factor = _TIER_PRICE[brand_tier] * np.exp(rng.normal(0, 0.1, B))
    brands_per_cat = int(np.clip(3 * B // C, 2, B)) if B > 1 else 1
    brand = np.empty(N, np.int64)
    for c in range(C):  # one loop per category, not per item
        members = np.flatnonzero(category == c)
        own = rng.choice(B, brands_per_cat, replace=False)
        brand[members] = own[rng.choice(brands_per_cat, len(members), p=_zipf(brands_per_cat, 1.0, rng))]

    log_median = rng.uniform(math.log(3), math.log(300), C)
    log_price = log_median[category] + rng.normal(0, 0.45, N)
    price = np.maximum(np.round(np.exp(log_price) * brand_factor[brand], 2), 0.5)
    cheapness = np.clip(np.exp(0.5 * (log_median[category] - np.log(price))), 0.5, 1.6)
    in_stock = rng.random(N) < cfg.in_stock_prob

    # blocks of items per category, random order inside, Zipf weights by position in the block
    by_cat = np.lexsort((rng.random(N), category))
    block_start = np.zeros(C + 1, np.int64)
    np.cumsum(np.bincount(category, minlength=C), out=block_start[1:])
    sorted_cat = category[by_cat]
    rank = np.arange(N) - block_start[sorted_cat]
    w = (rank + 1.0) ** -cfg.popularity_exponent
    csum = np.cumsum(w)
    before = np.concatenate([[0.0], csum])[block_start]  # cumulative weight before each block
    total = before[1:] - before[:-1]
    pop_cdf = sorted_cat + (csum - before[:-1][sorted_cat]) / total[sorted_cat]
    return _Catalog(
        category=category,
        brand=brand,
        price=price,
        in_stock=in_stock,
        cheapness=cheapness,
        consumable=consumable,
        related=related,
        brand_tier=brand_tier,
        cat_cdf=np.cumsum(cat_weight),
        by_cat=by_cat,
        block_start=block_start,
        pop_cdf=pop_cdf,
    )


def _neighbours(cat: _Catalog, cats: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """(N, k) items drawn from per-item categories `cats` (N, k): half popular, half uniform."""
    popular = cat.sample(cats, rng)
    uniform = cat.sample_uniform(cats, rng)
    return np.where(rng.random(cats.shape) < 0.5, popular, uniform)


# ---------------------------------------------------------------------------------------------------
# simulation
# ---------------------------------------------------------------------------------------------------


def generate_shop(cfg: ShopConfig) -> Shop:
    """Simulate a shop: catalog, users and their event log (deterministic for cfg.seed)."""
    rng = np.random.default_rng(cfg.seed)
    cat = _make_catalog(cfg, rng)
    N, C, U, F = cfg.num_items, cfg.num_categories, cfg.num_users, cfg.favourite_categories
    items = np.arange(N)

    # item neighbours: substitutes in the same category, complements in a related one
    subs_cats = np.repeat(cat.category[:, None], cfg.num_substitutes, 1)
    substitutes = _neighbours(cat, subs_cats, rng)
    same = substitutes == items[:, None]  # an item is not its own substitute: take the next in block
    nxt = cat.block_start[subs_cats] + (
        (np.argsort(cat.by_cat)[substitutes] - cat.block_start[subs_cats] + 1)
        % (cat.block_start[subs_cats + 1] - cat.block_start[subs_cats])
    )
    substitutes = np.where(same, cat.by_cat[nxt], substitutes)
    comp_cats = cat.related[cat.category[:, None], rng.integers(0, 2, (N, cfg.num_complements))]
    complements = _neighbours(cat, comp_cats, rng)

    # users: age group -> category prior; region -> preferred brand tier
    age = rng.choice(len(AGE_GROUPS), U, p=[0.12, 0.28, 0.25, 0.2, 0.15])
    region = rng.choice(len(REGIONS), U, p=[0.25, 0.2, 0.2, 0.2, 0.15])
    cat_pop = np.diff(np.concatenate([[0.0], cat.cat_cdf]))
    group_prior = cat_pop * rng.gamma(0.5, 1.0, (len(AGE_GROUPS), C))
    group_cdf = np.cumsum(group_prior / group_prior.sum(1, keepdims=True), 1)
    fav = np.empty((U, F), np.int64)
    for g in range(len(AGE_GROUPS)):  # a loop per age group
        members = np.flatnonzero(age == g)
        fav[members] = np.minimum(np.searchsorted(group_cdf[g], rng.random((len(members), F))), C - 1)
    fav_cdf = np.cumsum(rng.dirichlet(np.full(F, cfg.taste_concentration), U), 1)
    region_tier = rng.dirichlet(np.ones(3) * 2, len(REGIONS))
    tier_u = (rng.random(U)[:, None] > np.cumsum(region_tier[region], 1)).sum(1).clip(0, 2)

    # visits per user: lognormal with the mean that gives about events_per_user events
    p_cart = cfg.cart_prob * cfg.in_stock_prob
    events_per_visit = 1 + p_cart * (1 + cfg.purchase_prob)
    mean_visits = max(cfg.events_per_user / events_per_visit, cfg.min_events)
    sigma = 0.7
    visits = rng.lognormal(math.log(mean_visits) - sigma**2 / 2, sigma, U)
    visits = np.clip(np.round(visits), cfg.min_events, 20 * mean_visits).astype(np.int64)

    # simulate in "slot" order: users sorted by visit count, so step t's active users are a prefix
    order = np.argsort(-visits, kind="stable")
    visits, fav, fav_cdf, tier_u = visits[order], fav[order], fav_cdf[order], tier_u[order]
    active = np.bincount(visits)[::-1].cumsum()[::-1]  # active[t] = #users with > t visits (t >= 1)
    clock = cfg.start_time + rng.integers(0, 30 * _DAY, U)
    last_item = np.zeros(U, np.int64)
    last_carted = np.zeros(U, bool)
    last_consumable = np.full(U, -1, np.int64)
    nb_cdf_c = _rank_cdf(cfg.num_complements)
    nb_cdf_s = _rank_cdf(cfg.num_substitutes)

    out_user, out_item, out_time, out_type = [], [], [], []
    for t in range(int(visits[0])):
        n = int(active[t + 1]) if t + 1 < len(active) else 0
        if n == 0:
            break
        s = np.arange(n)
        if t == 0:
            new_session = np.ones(n, bool)
        else:
            new_session = rng.random(n) >= cfg.session_continue_prob
            gap_in = 20 + rng.lognormal(math.log(60), 0.8, n)
            gap_new = np.clip(rng.lognormal(math.log(1.5 * _DAY), 1.0, n), 1800, 60 * _DAY)
            clock[:n] += np.where(new_session, gap_new, gap_in).astype(np.int64)
            # taste drift: replace a favourite with a neighbour of another favourite, or a random one
            d = np.flatnonzero(new_session & (rng.random(n) < cfg.drift_prob))
            source = fav[d, rng.integers(0, F, len(d))]
            moved = np.where(
                rng.random(len(d)) < 0.7,
                cat.related[source, rng.integers(0, 2, len(d))],
                rng.integers(0, C, len(d)),
            )
            fav[d, rng.integers(0, F, len(d))] = moved

        # taste x popularity: favourite (or explored) category, 3 candidates, prefer own brand tier
        k = (rng.random(n)[:, None] > fav_cdf[:n]).sum(1).clip(0, F - 1)
        cats = fav[s, k]
        explore = rng.random(n) < cfg.explore_prob
        cats[explore] = np.minimum(np.searchsorted(cat.cat_cdf, rng.random(int(explore.sum()))), C - 1)
        cand = cat.sample(np.repeat(cats[:, None], 3, 1), rng)
        match = cat.brand_tier[cat.brand[cand]] == tier_u[:n, None]
        item = cand[s, match.argmax(1)]  # first tier match, else the first candidate

        # sequential: follow the previous item's complements (after a cart) or substitutes (after a view)
        if t > 0:
            follow = ~new_session & (rng.random(n) < cfg.follow_prob)
            prev = last_item[:n]
            comp = complements[prev, _pick(nb_cdf_c, n, rng)]
            subs = substitutes[prev, _pick(nb_cdf_s, n, rng)]
            item = np.where(follow, np.where(last_carted[:n], comp, subs), item)
        repeat = new_session & (last_consumable[:n] >= 0) & (rng.random(n) < cfg.repeat_prob)
        item = np.where(repeat, last_consumable[:n], item)

        # funnel: view -> cart -> purchase, each a little later than the previous step
        pc = np.where(repeat, 0.7, cfg.cart_prob * cat.cheapness[item]) * cat.in_stock[item]
        cart = rng.random(n) < pc
        buy = cart & (rng.random(n) < np.where(repeat, 0.85, cfg.purchase_prob))
        t_view = clock[:n].copy()
        t_cart = t_view + (5 + rng.lognormal(math.log(30), 0.7, n)).astype(np.int64)
        t_buy = t_cart + (10 + rng.lognormal(math.log(90), 0.7, n)).astype(np.int64)
        users = order[:n]
        out_user += [users, users[cart], users[buy]]
        out_item += [item, item[cart], item[buy]]
        out_time += [t_view, t_cart[cart], t_buy[buy]]
        out_type += [
            np.zeros(n, np.int8),
            np.ones(int(cart.sum()), np.int8),
            np.full(int(buy.sum()), 2, np.int8),
        ]

        clock[:n] = np.where(buy, t_buy, np.where(cart, t_cart, t_view))
        last_item[:n] = item
        last_carted[:n] = cart
        last_consumable[:n] = np.where(buy & cat.consumable[cat.category[item]], item, last_consumable[:n])

    user = np.concatenate(out_user)
    item = np.concatenate(out_item)
    time = np.concatenate(out_time)
    etype = np.concatenate(out_type)
    del out_user, out_item, out_time, out_type
    perm = np.argsort(time, kind="stable")  # one log in time order; ties keep the deterministic emit order
    user, item, time, etype = user[perm], item[perm], time[perm], etype[perm]
    value = np.where(etype == 2, cat.price[item], np.nan)

    item_ids = _ids("i", N)
    events = pl.DataFrame(
        {
            "user_id": _ids("u", U).gather(user),
            "item_id": item_ids.gather(item),
            "timestamp": pl.Series(time, dtype=pl.Int64),
            "event_type": pl.Series(EVENT_TYPES).gather(etype.astype(np.int64)),
            "value": pl.Series(value, nan_to_null=True),
        }
    )
    return Shop(
        events=events,
        catalog=_catalog_frame(cat, item_ids),
        users=pl.DataFrame(
            {
                "user_id": _ids("u", U),
                "region": pl.Series(REGIONS).gather(region),
                "age_group": pl.Series(AGE_GROUPS).gather(age),
            }
        ),
        config=cfg,
        complements=complements,
        substitutes=substitutes,
    )


def _rank_cdf(k: int) -> np.ndarray:
    """Neighbour choice: the first neighbours are the likeliest (weights 1, 1/2, 1/3, ...)."""
    w = 1.0 / (np.arange(k) + 1)
    return np.cumsum(w / w.sum())


def _pick(cdf: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
    return np.minimum(np.searchsorted(cdf, rng.random(n)), len(cdf) - 1)


def _ids(prefix: str, n: int) -> pl.Series:
    return pl.select(pl.concat_str(pl.lit(prefix), pl.int_range(n).cast(pl.Utf8))).to_series()


def _catalog_frame(cat: _Catalog, item_ids: pl.Series) -> pl.DataFrame:
    category = pl.select(pl.format("cat{}", pl.Series(cat.category))).to_series()
    brand = pl.select(pl.format("brand{}", pl.Series(cat.brand))).to_series()
    title = pl.select(
        pl.concat_str(
            brand.str.to_titlecase(),
            pl.Series(TIERS).gather(cat.brand_tier[cat.brand]),
            category,
            item_ids,
            separator=" ",
        )
    ).to_series()
    return pl.DataFrame(
        {
            "item_id": item_ids,
            "category": category,
            "brand": brand,
            "price": pl.Series(cat.price, dtype=pl.Float64),
            "in_stock": pl.Series(cat.in_stock, dtype=pl.Boolean),
            "title": title,
        }
    )
