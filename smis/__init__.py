"""smis: diverse semantic image synthesis and editing with class- and layer-wise VAEs.

A from-scratch re-implementation of Endo & Kanamori, "Diversifying Semantic Image Synthesis
and Editing via Class- and Layer-wise VAEs" (Pacific Graphics 2020), as a thin library that
the numbered notebooks in `notebooks/` call into.
"""

from smis.official import load_official

__version__ = "0.1.0"
__all__ = ["load_official"]
