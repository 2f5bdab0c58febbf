"""Running a trained model: loading a model directory, reading images, class probabilities
(predictor.py); the faces of raw photos and video frames (faces.py: detection, alignment,
landmarks; photos and videos are read by fer_jax/data/media.py); class activation maps
(cams.py); what predict writes (outputs.py); datasets made from raw photos (face_data.py).

The documented library calls are importable from here:

  model, variables, meta = inference.load_model("runs/baseline")
  probs = inference.predict(model, variables, meta, inference.list_images(["faces/"]))
  predictor = inference.FacePredictor(model, variables, meta)
"""

from fer_jax.inference.predictor import (
  ALIGN_SIZE,
  IMAGE_SUFFIXES,
  FacePrediction,
  FacePredictor,
  align_faces,
  face_crops,
  list_images,
  load_model,
  predict,
  predict_faces,
  predict_source,
  probability_fn,
  read_image,
  resize,
)

__all__ = ["ALIGN_SIZE", "IMAGE_SUFFIXES", "FacePrediction", "FacePredictor", "align_faces",
           "face_crops", "list_images", "load_model", "predict", "predict_faces",
           "predict_source", "probability_fn", "read_image", "resize"]
