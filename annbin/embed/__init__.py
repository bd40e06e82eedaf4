"""Float embeddings in: the encoder, float-in first stages, rescoring and ``BinaryEmbeddingIndex``."""
