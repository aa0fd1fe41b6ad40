"""Clustering of embeddings: spherical (cosine) k-means and the cosine silhouette of a clustering."""
from voxprint.clustering.kmeans import SphericalKMeans, cosine_silhouette, spherical_kmeans

__all__ = ["SphericalKMeans", "cosine_silhouette", "spherical_kmeans"]
