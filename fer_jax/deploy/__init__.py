"""What leaves the Python process: a model as StableHLO for jax alone (stablehlo.py) or as ONNX
for onnxruntime (onnx_export.py), and the local demo web page (demo_page.py)."""
