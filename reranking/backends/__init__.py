"""Model backends of the rerank stage: the only modules of ``reranking`` that import torch."""
