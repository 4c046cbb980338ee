"""Embedding export, FAISS index build and the versioned artifact store."""
