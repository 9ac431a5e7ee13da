"""Analyses of trained models: where the answer tokens' attention goes (FOCUS Fig. 2 and Appendix D)."""
