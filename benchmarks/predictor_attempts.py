"""Predictor quality attempts, measured on the VALIDATION split only (seed 42, 80/10/10).

Every attempt of issue 16 part 4 in one script: title-form features, richer hashed
lexical features (char n-grams, category-crossed words, hashtags), linear and
LightGBM stackers over out-of-fold ridge predictions + k-NN label statistics +
category target encoding + form features, per-category calibration, a rank target,
the blend with the MMRA network, and two honest ceilings (label agreement of
near-duplicate titles; within-category SRC). The test split is never read.

    python benchmarks/predictor_attempts.py --data "$POPCORN_DATA" [--json out.json]
        [--mmra src/llmpopcorn/predict/models/default]   # a model trained on this split

Needs the corpus' MiniLM embeddings (cached after the first run) and, for the
LightGBM rows, ``pip install lightgbm`` (skipped when absent). Takes ~10 minutes on a
busy 2-core machine.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import re
import sys
from collections import defaultdict

import numpy as np
import scipy.sparse as sp
from scipy.stats import norm, rankdata, spearmanr
from sklearn.feature_extraction.text import HashingVectorizer
from sklearn.linear_model import Ridge
from sklearn.preprocessing import StandardScaler, normalize

from llmpopcorn.predict.data import load_table, split_indices
from llmpopcorn.predict.embed import attach_embeddings
from llmpopcorn.predict.stack import knn_statistics, title_form

RESULTS: list[dict] = []


def rep(name: str, y: np.ndarray, p: np.ndarray, note: str = "") -> tuple[float, float]:
    n = float(np.mean((p - y) ** 2) / np.var(y))
    s = float(spearmanr(y, p).statistic)
    RESULTS.append({"attempt": name, "valid_nmse": n, "valid_src": s, "note": note})
    print(f"{name:58s} nMSE {n:.4f} SRC {s:.4f}", flush=True)
    return n, s


def hashed(texts, nf, **kw):
    v = HashingVectorizer(n_features=nf, alternate_sign=False, norm=None, **kw)
    x = v.transform(texts).tocsr().astype(np.float32)
    x.data = 1 + np.log(x.data)
    return x


def tfidf(x, rows):
    df = np.bincount(x[rows].indices, minlength=x.shape[1])
    idf = (np.log((1 + len(rows)) / (1 + df)) + 1).astype(np.float32)
    return normalize(x @ sp.diags(idf), norm="l2")


def onehot(cats, vocab):
    lookup = {c: i for i, c in enumerate(vocab)}
    rows = [r for r, c in enumerate(cats) if c in lookup]
    cols = [lookup[c] for c in cats if c in lookup]
    return sp.csr_matrix((np.ones(len(rows)), (rows, cols)), shape=(len(cats), len(vocab)))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", required=True)
    ap.add_argument("--mmra", default=None, help="an mmra model trained on this split")
    ap.add_argument("--json", default=None)
    args = ap.parse_args(argv)

    table, corpus = load_table(args.data, text_fields="informative")
    attach_embeddings(table, corpus, {"minilm"})
    tr, va, _ = split_indices(len(table), 42)  # the test split is never used
    texts, cats, y = list(table.texts), table.categories.astype(str), table.y
    ytr, yva = y[tr], y[va]
    emb = table.features["minilm"].astype(np.float32)
    emb /= np.linalg.norm(emb, axis=1, keepdims=True)

    # -- single ridges ----------------------------------------------------------------
    xc = onehot(cats, sorted(set(cats[tr])))
    form = title_form(texts)
    xf = sp.csr_matrix(StandardScaler().fit(form[tr]).transform(form))
    word = tfidf(hashed(texts, 2**18, ngram_range=(1, 2)), tr)
    char = tfidf(hashed(texts, 2**20, analyzer="char_wb", ngram_range=(2, 5)), tr)
    crossed = [
        " ".join(f"{c.replace(' ', '_')}__{w}" for w in re.findall(r"\w+|#", t.lower()))
        for t, c in zip(texts, cats, strict=True)
    ]
    cross = tfidf(hashed(crossed, 2**17, token_pattern=r"\S+", lowercase=False), tr)
    tags = [
        " ".join("tag_" + re.sub(r"\W+", "_", x.strip().lower()) for x in t.split("#")[1:])
        for t in texts
    ]
    tag = tfidf(hashed(tags, 2**15, token_pattern=r"\S+", lowercase=False), tr)

    def ridge(name, x, alphas, note=""):
        x = x.tocsr() if sp.issparse(x) else x
        best = None
        for a in alphas:
            p = Ridge(alpha=a).fit(x[tr], ytr).predict(x[va])
            mse = np.mean((p - yva) ** 2)
            if best is None or mse < best[0]:
                best = (mse, a, p)
        rep(f"{name} (alpha {best[1]} on valid)", yva, best[2], note)
        return best[1]

    ridge("category only", xc, (1.0,))
    ridge("title form + category", sp.hstack([xf, xc]), (1.0, 10.0))
    ridge("hashed word 1-2-gram TF-IDF + category", sp.hstack([word, xc]), (2, 4, 8))
    ridge("hashed char 2-5-gram TF-IDF + category", sp.hstack([char, xc]), (3, 10))
    ridge("word + char + category", sp.hstack([word, char, xc]), (3, 10))
    ridge("word + char + form + category", sp.hstack([word, char, 0.3 * xf, xc]), (3, 10))
    ridge("word + category-crossed words + category", sp.hstack([word, 0.7 * cross, xc]), (2, 4))
    ridge("word + whole hashtags + category", sp.hstack([word, 0.7 * tag, xc]), (2, 4))
    lex = sp.hstack([word, 0.7 * cross, 0.7 * tag, xc]).tocsr()
    ridge("lex-ridge: word + crossed + hashtags + category", lex, (2, 4, 8))
    xe = np.hstack([emb, xc.toarray()])
    ridge("MiniLM + category (embed-ridge)", xe, (1, 3, 10))

    # -- stacking: out-of-fold ridges, leave-one-out k-NN statistics, TE, form ---------
    folds = np.random.default_rng(0).permutation(len(tr)) % 5

    def oof(x, alpha):
        out = np.zeros(len(tr))
        for f in range(5):
            a, b = tr[folds != f], tr[folds == f]
            out[folds == f] = Ridge(alpha=alpha).fit(x[a], y[a]).predict(x[b])
        return out, Ridge(alpha=alpha).fit(x[tr], ytr).predict(x[va])

    members = {
        "lex": oof(lex, 4),
        "char": oof(sp.hstack([char, xc]).tocsr(), 10),
        "emb": oof(xe, 3),
    }
    rep(
        "mean of lex, char and embedding ridges",
        yva,
        np.mean([v[1] for v in members.values()], axis=0),
    )
    ids = np.asarray(table.ids).astype(str)
    memory_ids = {v: i for i, v in enumerate(ids[tr])}

    def knn(rows):
        return knn_statistics(emb[tr], memory_ids, ytr, cats[tr], emb[rows], ids[rows], cats[rows])

    k_tr, k_va = knn(tr), knn(va)
    gm = ytr.mean()

    def target_enc(fit_c, fit_y, q, m=20):
        d = {c: (fit_y[fit_c == c].sum() + m * gm) / ((fit_c == c).sum() + m) for c in set(fit_c)}
        return np.array([d.get(c, gm) for c in q])

    te_tr = np.zeros(len(tr))
    for f in range(5):
        te_tr[folds == f] = target_enc(cats[tr][folds != f], ytr[folds != f], cats[tr][folds == f])
    te_va = target_enc(cats[tr], ytr, cats[va])
    blocks = {
        "lex": ([members["lex"][0]], [members["lex"][1]]),
        "char": ([members["char"][0]], [members["char"][1]]),
        "emb": ([members["emb"][0]], [members["emb"][1]]),
        "knn": (list(k_tr.T), list(k_va.T)),
        "te": ([te_tr], [te_va]),
        "form": (list(form[tr].T), list(form[va].T)),
    }

    def stack(keep, target=ytr):
        xt = np.column_stack(sum((blocks[b][0] for b in keep), []))
        xv = np.column_stack(sum((blocks[b][1] for b in keep), []))
        sc = StandardScaler().fit(xt)
        model = Ridge(alpha=100).fit(sc.transform(xt), target)
        return model.predict(sc.transform(xt)), model.predict(sc.transform(xv)), xt, xv

    full = list(blocks)
    s_tr, s_va, xt, xv = stack(full)
    rep("linear stacker (ridges OOF + kNN stats + TE + form)", yva, s_va)
    for b in full:
        rep(f"  stacker without {b}", yva, stack([c for c in full if c != b])[1], "ablation")
    z = norm.ppf((rankdata(ytr) - 0.5) / len(ytr))
    rep("linear stacker on a rank-gauss target", yva, stack(full, z)[1] * ytr.std() + gm, "SRC")
    calibrated = s_va.copy()
    for c in set(cats[tr]):
        m, mv = cats[tr] == c, cats[va] == c
        if m.sum() >= 100 and mv.any():
            calibrated[mv] = Ridge(alpha=10).fit(s_tr[m, None], ytr[m]).predict(s_va[mv, None])
    rep("per-category linear calibration of the stacker", yva, calibrated)
    if importlib.util.find_spec("lightgbm"):
        import lightgbm as lgb

        params = dict(
            objective="regression",
            learning_rate=0.05,
            num_leaves=15,
            min_child_samples=50,
            subsample=0.8,
            subsample_freq=1,
            colsample_bytree=0.8,
            verbose=-1,
            n_jobs=1,
        )
        cv = lgb.cv(
            params,
            lgb.Dataset(xt, ytr),
            num_boost_round=3000,
            nfold=3,
            stratified=False,
            seed=0,
            callbacks=[lgb.early_stopping(50, verbose=False)],
        )
        rounds = len(cv["valid l2-mean"])
        booster = lgb.train(params, lgb.Dataset(xt, ytr), num_boost_round=rounds)
        rep(
            f"LightGBM stacker (same inputs, {rounds} rounds by CV on train)",
            yva,
            booster.predict(xv),
        )

    if args.mmra:
        from llmpopcorn.predict import load_model

        pm = load_model(args.mmra).predict(table.take(va))
        rep("MMRA network (the model given by --mmra)", yva, pm)
        a = np.column_stack([np.ones(len(va)), pm, s_va])
        rep(
            "MMRA + stacker, blend fitted on valid (in-sample)", yva, a @ np.linalg.lstsq(a, yva)[0]
        )
        rng, crossfit = np.random.default_rng(0), []
        for _ in range(5):
            half, p = rng.permutation(len(va)) % 2, np.zeros(len(va))
            for k in (0, 1):
                w = np.linalg.lstsq(a[half != k], yva[half != k])[0]
                p[half == k] = a[half == k] @ w
            crossfit.append(p)
        n = np.mean([np.mean((p - yva) ** 2) / np.var(yva) for p in crossfit])
        s = np.mean([spearmanr(yva, p).statistic for p in crossfit])
        RESULTS.append(
            {
                "attempt": "MMRA + stacker, 2-fold cross-fitted blend (5 repeats)",
                "valid_nmse": n,
                "valid_src": s,
                "note": "honest estimate of the blend",
            }
        )
        print(f"{'MMRA + stacker, 2-fold cross-fitted blend':58s} nMSE {n:.4f} SRC {s:.4f}")

    # -- ceilings -----------------------------------------------------------------------
    groups: dict[str, list[int]] = defaultdict(list)
    for i, t in enumerate(texts):
        groups[t.strip().lower()].append(i)
    rng = np.random.default_rng(0)
    pairs = [rng.choice(v, 2, replace=False) for v in groups.values() if len(v) > 1]
    a = np.array([y[i] for i, j in pairs] + [y[j] for i, j in pairs])
    b = np.array([y[j] for i, j in pairs] + [y[i] for i, j in pairs])
    ceilings = {
        "exact_duplicate_titles": {"groups": len(pairs), "pearson": np.corrcoef(a, b)[0, 1]}
    }
    for th in (0.95, 0.9):
        a, b = [], []
        for s0 in range(0, len(emb), 2048):
            sim = emb[s0 : s0 + 2048] @ emb.T
            sim[np.arange(sim.shape[0]), s0 + np.arange(sim.shape[0])] = -1
            j = sim.argmax(1)
            m = sim[np.arange(len(j)), j] >= th
            a += list(y[s0 + np.flatnonzero(m)])
            b += list(y[j[m]])
        ceilings[f"nearest_title_cos_ge_{th}"] = {
            "rows": len(a),
            "pearson": float(np.corrcoef(a, b)[0, 1]),
            "spearman": float(spearmanr(a, b).statistic),
        }
    print(json.dumps(ceilings, indent=1, default=float))
    if args.json:
        with open(args.json, "w") as fh:
            json.dump({"attempts": RESULTS, "ceilings": ceilings}, fh, indent=1, default=float)
    return 0


if __name__ == "__main__":
    sys.exit(main())
