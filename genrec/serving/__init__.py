"""Online serving.

recommender.py  Recommender: top-k from a run for a raw-id history (offline / CLI use)
pipeline.py     ServingModel (one run's model, catalog, dataset history) and the stage pipeline
store.py        durable event stores: SQLite WAL (default) and Redis
app.py          the FastAPI app (create_app); config.py its settings; metrics.py Prometheus text
cli.py          `genrec serve RUN_DIR`
Submodules import lazily: `import genrec.serving.recommender` does not pull in FastAPI.
"""
