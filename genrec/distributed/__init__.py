"""Scale-out: TorchRec-sharded embedding tables, DDP for the rest, sharded checkpoints, scaling study.

sharding.py        make_plan / shard / describe_plan: any module with EmbeddingCollection or
                   EmbeddingBagCollection tables (row-wise EBC allowed on CPU), per-rank memory budget
sequential.py      ShardableSequential: HSTU / SASRec with the item table as an EC (no edit to genrec/models)
dlrm_next_item.py  a minimal DLRM-style next-item model on EBCs (scaling study, EBC sharding tests)
train.py           `torchrun -m genrec.distributed.train`, launch()/launch_train() for `genrec train --nproc-per-node`
checkpoint.py      DCP save/load (same world size) and load_unsharded (any world size -> one process)
scaling.py         `genrec scaling`: NDCG@10 vs counted training FLOPs, power-law fits
"""
