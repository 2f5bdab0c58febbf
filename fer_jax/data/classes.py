"""Class orders of the benchmarks (index = label id used for training)."""

# RAF-DB basic labels 1..7 (eac.md §4), as 0..6.
RAF_DB = ("surprise", "fear", "disgust", "happiness", "sadness", "anger", "neutral")
