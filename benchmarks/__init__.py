"""Side-by-side benchmarks: IMPACT (ours) vs elastix 5.3.1's own Impact vs intensity metrics.

python -m benchmarks [--cases lung brain2d multimodal3d] [--seeds 1] [--json results.json]
"""
