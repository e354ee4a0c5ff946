"""Model backends of the retrieval stage: the only modules of ``retrieval`` that import torch."""
