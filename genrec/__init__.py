"""genrec: a generative recommendation engine (HSTU, SASRec) for e-commerce personalization."""
