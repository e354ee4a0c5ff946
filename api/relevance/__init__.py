"""Relevance work around the service: BEIR loading (``beir``), evaluation runs and their reports
(``evaluate``, ``eval_probe``, ``eval_options``, ``eval_run``, ``eval_report``), rerank-gate learning
(``gate``), training data and the training runs (``training_data``, ``train_eval``, ``train_run``) and review
clustering (``review_clusters``, served by ``api.routes.review``)."""
