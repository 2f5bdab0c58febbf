"""The expression classes: the benchmarks' class orders (index = label id used for training)
and class-name lookup, shared by datasets, model files and label noise.

Each dataset keeps its own order; anything that relates classes across datasets (asymmetric
noise maps, remaps, a model's head) goes through the names, via `canonical`.
"""

# RAF-DB basic labels 1..7 (eac.md §4), as 0..6.
RAF_DB = ("surprise", "fear", "disgust", "happiness", "sadness", "anger", "neutral")
# FERPlus vote columns of fer2013new.csv, without "unknown" and "NF" (ncct_scn_rul.md §7).
FERPLUS = ("neutral", "happiness", "surprise", "sadness", "anger", "disgust", "fear", "contempt")
# AffectNet expression codes 0..7 (8 None, 9 Uncertain, 10 Non-Face are never classes).
AFFECTNET = ("neutral", "happiness", "sadness", "surprise", "fear", "disgust", "anger", "contempt")
# LA-Net's code remaps RAF-DB's labels to this order before it draws label noise (lanet.md §4).
LANET = ("anger", "disgust", "fear", "happiness", "sadness", "surprise", "neutral")

_SYNONYMS = {"happy": "happiness", "sad": "sadness", "angry": "anger", "surprised": "surprise",
             "fearful": "fear", "disgusted": "disgust"}


def canonical(name):
  """The basic-expression name of a class as datasets spell it ("Happy" -> "happiness")."""
  key = name.strip().lower()
  return _SYNONYMS.get(key, key)
