"""Measuring the product: answer quality on question sets, retrieval quality on BEIR folders."""
