"""Stores: item table and embeddings, vector store, BM25, profiles."""
