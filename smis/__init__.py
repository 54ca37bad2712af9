"""smis: diverse semantic image synthesis and editing with class- and layer-wise VAEs.

A from-scratch re-implementation of Endo & Kanamori, "Diversifying Semantic Image Synthesis
and Editing via Class- and Layer-wise VAEs" (Pacific Graphics 2020), as a thin library that
the numbered notebooks in `notebooks/` call into.
"""

__version__ = "0.1.0"


def load_official(*args, **kwargs):
    from smis.official import load_official as _load
    return _load(*args, **kwargs)
