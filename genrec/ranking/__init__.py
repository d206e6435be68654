"""Training for CTR rankers (DLRM, Wide & Deep, logistic regression) and the two-tower retriever."""
