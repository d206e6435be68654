"""Generative ranking: HSTU over (item, action, time) tokens with a multi-task head (genrec.models.hstu_ranker).

data.py       ActionSequences and loaders: synthetic shop (view/cart/purchase), ml-100k, ml-1m ratings (users 1-2999)
examples.py   held-out candidate lists and training cuts (history + appended candidates + multi-task labels)
train.py      masked multi-task loss, fit_hstu / predict_hstu
baselines.py  popularity by action, a DLRM-style feature ranker, adapters for genrec.models' DLRM / Wide & Deep
(metrics: genrec.evaluation.metrics.ranking_report, per-task AUC / logloss, NDCG@K over candidate lists)
run.py        train + save / load a ranker run (used by genrec.serving.hstu_rank_stage)
cli.py        `genrec genrank train`
"""
