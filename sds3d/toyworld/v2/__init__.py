"""Toy world v2 (``toyworld_v2.json``): v1 plus faced objects (owl, house, chair) that reproduce the
Janus problem, two-object compositions, a front-biased sparsely captioned training distribution,
an independent judge and the mesh metrics (Janus, compositions, colour)."""
