"""Scoring and combining predictions: metrics, probability tables, the blend, the expected leaderboard."""
