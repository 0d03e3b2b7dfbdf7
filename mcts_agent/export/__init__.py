"""Exports of search trees: GraphML/networkx, the offline HTML viewer, statistics."""
