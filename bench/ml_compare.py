#!/usr/bin/env python3
"""Kairos GBDT and logistic regression side by side with LightGBM and scikit-learn.

Same arrays, same folds, same machine, same run, same thread count:
  (a) synthetic: 1,000,000 x 50 rows with a nonlinear signal, 80/20 split;
  (b) Caravan (CoIL 2000, from the `islp` package): 5,822 x 85, stratified 5-fold CV.

    bench/ml_compare.sh [--rows 1000000] [--threads 2]

(which installs LightGBM, scikit-learn, numpy, pandas and islp into bench/.venv, builds
the Kairos side and runs this script).

Timing is training only (binning included for all three GBDTs; file reading excluded).
"""
import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

THREADS_ENV = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")


def parse():
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--cols", type=int, default=50)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=200)
    ap.add_argument("--leaves", type=int, default=31)
    ap.add_argument("--skip-synthetic", action="store_true")
    ap.add_argument("--skip-caravan", action="store_true")
    ap.add_argument("--kairos", default="target/release/examples/compare")
    ap.add_argument("--out")
    return ap.parse_args()


def synthetic(rows, cols, seed=7):
    import numpy as np

    rng = np.random.default_rng(seed)
    x = rng.standard_normal((rows, cols), dtype=np.float32)
    # Missing values in two columns, as event features have.
    x[rng.random(rows) < 0.1, 7] = np.nan
    x[rng.random(rows) < 0.3, 8] = np.nan
    m = (
        np.sin(2 * x[:, 0])
        + x[:, 1] * x[:, 2]
        + np.abs(x[:, 3])
        - 0.8
        + 0.5 * x[:, 4]
        + 0.7 * (x[:, 5] > 0.5) * x[:, 6]
        + np.where(np.isnan(x[:, 7]), 0.6, 0.2 * np.nan_to_num(x[:, 7]))
        + 0.3 * np.tanh(3 * np.nan_to_num(x[:, 8]))
    )
    p = 1 / (1 + np.exp(-1.5 * m))
    y = (rng.random(rows) < p).astype(np.uint8)
    folds = np.where(rng.random(rows) < 0.2, 0, 255).astype(np.uint8)
    return x, y, folds


def caravan():
    import numpy as np
    import pandas as pd
    import importlib.util

    spec = importlib.util.find_spec("ISLP")
    path = os.path.join(spec.submodule_search_locations[0], "data", "Caravan.csv")
    df = pd.read_csv(path)
    y = (df.pop("Purchase") == "Yes").astype(np.uint8).to_numpy()
    x = df.to_numpy(dtype=np.float32)
    # Stratified 5-fold, fixed seed.
    rng = np.random.default_rng(11)
    folds = np.zeros(len(y), dtype=np.uint8)
    for cls in (0, 1):
        idx = np.flatnonzero(y == cls)
        rng.shuffle(idx)
        folds[idx] = np.arange(len(idx)) % 5
    return x, y, folds, path


def run_peers(x, y, folds, args, results, dataset):
    import lightgbm as lgb
    import numpy as np
    from sklearn.ensemble import HistGradientBoostingClassifier
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import log_loss, roc_auc_score
    from sklearn.preprocessing import StandardScaler
    from sklearn.impute import SimpleImputer
    from sklearn.pipeline import make_pipeline

    for fold in sorted(set(folds.tolist()) - {255}):
        tr, te = folds != fold, folds == fold
        xtr, ytr, xte, yte = x[tr], y[tr], x[te], y[te]

        def record(name, secs, p, **extra):
            results.append(dict(dataset=dataset, learner=name, fold=fold, seconds=secs,
                                auc=float(roc_auc_score(yte, p)),
                                log_loss=float(log_loss(yte, np.clip(p, 1e-15, 1 - 1e-15))), **extra))
            print(f"  {dataset} fold {fold} {name:<22} {secs:8.2f}s  AUC {results[-1]['auc']:.4f}", flush=True)

        t = time.perf_counter()
        booster = lgb.train(
            dict(objective="binary", learning_rate=0.1, num_leaves=args.leaves, min_data_in_leaf=20,
                 min_sum_hessian_in_leaf=1e-3, lambda_l2=0.0, max_bin=255, num_threads=args.threads,
                 verbose=-1, seed=1, deterministic=True),
            lgb.Dataset(xtr, ytr), num_boost_round=args.rounds)
        secs = time.perf_counter() - t
        record("lightgbm", secs, booster.predict(xte))

        t = time.perf_counter()
        hgb = HistGradientBoostingClassifier(learning_rate=0.1, max_iter=args.rounds, max_leaf_nodes=args.leaves,
                                             min_samples_leaf=20, l2_regularization=0.0, max_bins=255,
                                             early_stopping=False, random_state=1).fit(xtr, ytr)
        secs = time.perf_counter() - t
        record("sklearn_hist_gbdt", secs, hgb.predict_proba(xte)[:, 1])

        t = time.perf_counter()
        lr = make_pipeline(SimpleImputer(), StandardScaler(), LogisticRegression(C=1.0, max_iter=1000)).fit(xtr, ytr)
        secs = time.perf_counter() - t
        record("sklearn_logistic", secs, lr.predict_proba(xte)[:, 1])


def run_kairos(x, y, folds, args, results, dataset):
    import numpy as np

    with tempfile.TemporaryDirectory() as d:
        paths = [os.path.join(d, n) for n in ("x.f32", "y.u8", "folds.u8")]
        np.ascontiguousarray(x, dtype="<f4").tofile(paths[0])
        y.astype(np.uint8).tofile(paths[1])
        folds.astype(np.uint8).tofile(paths[2])
        gbdt = dict(rounds=args.rounds, learning_rate=0.1, max_leaves=args.leaves, min_data_in_leaf=20,
                    min_sum_hessian=1e-3, lambda_l2=0.0, max_bins=255, threads=args.threads)
        for learner, params in (("gbdt", gbdt), ("logistic", dict(c=1.0, threads=args.threads))):
            out = subprocess.run([args.kairos, *paths, str(x.shape[1]), learner, json.dumps(params)],
                                 check=True, capture_output=True, text=True).stdout
            for line in out.splitlines():
                r = json.loads(line)
                name = "kairos_gbdt" if learner == "gbdt" else "kairos_logistic"
                results.append(dict(dataset=dataset, learner=name, fold=r["fold"], seconds=r["seconds"],
                                    auc=r["auc"], log_loss=r["log_loss"]))
                print(f"  {dataset} fold {r['fold']} {name:<22} {r['seconds']:8.2f}s  AUC {r['auc']:.4f}", flush=True)


def summary(results):
    import statistics as st

    print("\n| data set | learner | folds | train seconds (mean) | AUC (mean) | log loss (mean) |")
    print("|---|---|---|---|---|---|")
    keys = []
    for r in results:
        k = (r["dataset"], r["learner"])
        if k not in keys:
            keys.append(k)
    table = {}
    for k in keys:
        rs = [r for r in results if (r["dataset"], r["learner"]) == k]
        row = (len(rs), st.mean(r["seconds"] for r in rs), st.mean(r["auc"] for r in rs),
               st.mean(r["log_loss"] for r in rs))
        table[k] = row
        print(f"| {k[0]} | {k[1]} | {row[0]} | {row[1]:.3f} | {row[2]:.4f} | {row[3]:.4f} |")
    print()
    for ds in dict.fromkeys(k[0] for k in keys):
        if (ds, "kairos_gbdt") in table and (ds, "lightgbm") in table:
            k, l = table[(ds, "kairos_gbdt")], table[(ds, "lightgbm")]
            print(f"{ds}: kairos GBDT AUC - LightGBM AUC = {k[2] - l[2]:+.4f}; "
                  f"training time ratio kairos/LightGBM = {k[1] / l[1]:.2f}")
        if (ds, "kairos_logistic") in table and (ds, "sklearn_logistic") in table:
            k, s = table[(ds, "kairos_logistic")], table[(ds, "sklearn_logistic")]
            print(f"{ds}: kairos logistic AUC - scikit-learn AUC = {k[2] - s[2]:+.4f}; "
                  f"time ratio kairos/scikit-learn = {k[1] / s[1]:.2f}")


def main():
    args = parse()
    for v in THREADS_ENV:
        os.environ[v] = str(args.threads)
    results = []
    if not args.skip_caravan:
        x, y, folds, path = caravan()
        print(f"caravan: {x.shape[0]} x {x.shape[1]} from {os.path.basename(path)}, "
              f"{y.mean():.4f} positive, 5-fold", flush=True)
        run_kairos(x, y, folds, args, results, "caravan")
        run_peers(x, y, folds, args, results, "caravan")
    if not args.skip_synthetic:
        x, y, folds = synthetic(args.rows, args.cols)
        print(f"synthetic: {x.shape[0]} x {x.shape[1]}, {y.mean():.4f} positive, 80/20", flush=True)
        run_kairos(x, y, folds, args, results, "synthetic")
        run_peers(x, y, folds, args, results, "synthetic")
    summary(results)
    if args.out:
        with open(args.out, "w") as f:
            json.dump(results, f, indent=1)


if __name__ == "__main__":
    sys.exit(main())
