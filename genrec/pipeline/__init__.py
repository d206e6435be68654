"""The offline multi-stage pipeline: retrieval (HSTU + two-tower) -> ranker -> re-rank, measured stage by stage."""
