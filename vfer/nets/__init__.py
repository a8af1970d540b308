"""Networks built from registered pieces: backbones, temporal models, fusions, heads.

``vfer.nets.registry`` names every piece without importing torch; the modules beside it
(backbones, temporal, fusion, heads, network) implement them.
"""
