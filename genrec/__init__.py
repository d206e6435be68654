"""genrec: a generative recommendation engine (HSTU, SASRec) for e-commerce personalization."""

from genrec.memory import keep_freed_memory

keep_freed_memory()  # before torch's first large allocation: see genrec/memory.py
