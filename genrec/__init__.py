"""genrec: a generative recommendation engine (HSTU, SASRec) for e-commerce personalization."""

import os

# Must precede torch's first allocation (see genrec.runtime): back big CPU tensors by transparent huge pages.
os.environ.setdefault("THP_MEM_ALLOC_ENABLE", "1")
