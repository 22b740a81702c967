"""Kaggle's API through its own client: downloads, submissions, and its failures explained."""
