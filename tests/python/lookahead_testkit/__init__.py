"""Test kit for the onnx-lookahead end-to-end tests, fixtures and benchmarks.

- model:     small MLPs as ONNX models plus an independent NumPy forward/backward
- reference: NumPy AdamW/SGD matching ORT's artifacts, and the Lookahead reference loop
- ort:       torch-free import of onnxruntime.training, artifact generation, the stock ORT loop
- cli:       the onnx-lookahead binary as a black box
- compare:   step-by-step comparisons whose failures name the first diverging step
- run_loop:  resume training from a checkpoint in a fresh process
- training_info: an ONNX training_info (SGD) model and one training iteration via onnx.reference
- zoo:       more generate_artifacts models and the host-side Lookahead reference
- unusual:   valid but unusual inputs (dtypes, subgraphs, names, external data) for test_unusual_inputs
- web:       sets loaded (and trained) in onnxruntime-web 1.17-1.19 in headless Chromium (tests/web/)

`ort` imports onnxruntime.training on import, and so do zoo and unusual (they use it); the other
modules do not.
"""
