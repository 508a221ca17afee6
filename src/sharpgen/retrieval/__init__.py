"""Stages 6-7, retrieval: train the SimSiam encoder, embed and index the real patches, search and evaluate.

Rules ``train_ssl``, ``build_index`` and ``evaluate_retrieval``; results ``ssl/``, ``retrieval/``.
"""
